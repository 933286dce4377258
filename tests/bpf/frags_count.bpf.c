// Counts packets and their bytes, multi-buffer aware (SEC("xdp.frags")): it may run
// on an interface whose MTU needs more than one page per packet.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} frag_stats SEC(".maps");  /* 0: packets, 1: bytes (all fragments) */

SEC("xdp.frags")
int frags_count(struct xdp_md *ctx)
{
	__u32 k0 = 0, k1 = 1;
	__u64 *pkts = bpf_map_lookup_elem(&frag_stats, &k0);
	__u64 *bytes = bpf_map_lookup_elem(&frag_stats, &k1);

	if (pkts)
		__sync_fetch_and_add(pkts, 1);
	if (bytes)
		__sync_fetch_and_add(bytes, bpf_xdp_get_buff_len(ctx));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
