// The guard, upgraded: same maps and verdicts, another digest.
#define GAP_VARIANT 2
#include "gap_guard.bpf.c"
