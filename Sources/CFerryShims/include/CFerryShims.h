#ifndef CFERRY_SHIMS_H
#define CFERRY_SHIMS_H
#include <stdint.h>
#endif
