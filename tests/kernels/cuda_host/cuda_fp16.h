#include "cuda_host.h"
