// The no-gap suite's tail: always last; counts what reached the chain's end
// (port 9 must never get here: the guard drops it first).
#define GAP_FUNC gap_tail
#define GAP_DROP_VERDICT XDP_PASS
#include "gap_guard.bpf.c"
