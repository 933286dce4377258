// The filler, upgraded: another digest, same map.
#define FILLER_VARIANT 2
#include "gap_filler.bpf.c"
