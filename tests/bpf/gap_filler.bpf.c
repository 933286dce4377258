// A churn component for the no-gap suite: counts and passes.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef FILLER_VARIANT
#define FILLER_VARIANT 1
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} filler_count SEC(".maps");

SEC("xdp")
int gap_filler(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&filler_count, &key);

	if (v)
		__sync_fetch_and_add(v, FILLER_VARIANT);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
