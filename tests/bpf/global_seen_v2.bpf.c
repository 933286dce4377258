/* global_seen, version 2: `seen` is 32 bits wide (a change of its layout). */
#define SEEN_T __u32
#include "global_seen.bpf.c"
