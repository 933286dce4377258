// A multi-buffer aware program (SEC("xdp.frags")) that needs no helper of its own: it
// counts packets and passes them, so it loads on every kernel of the matrix, and what a
// kernel without multi-buffer XDP (5.10) refuses is the jumbo MTU, not the program.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fp_count SEC(".maps");

SEC("xdp.frags")
int frags_pass(struct xdp_md *ctx)
{
	__u32 k = 0;
	__u64 *n = bpf_map_lookup_elem(&fp_count, &k);

	if (n)
		__sync_fetch_and_add(n, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
