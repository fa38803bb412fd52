#include "CFerryShims.h"
