/* Global data under live traffic (issue 22 item 3): every UDP packet to port 9 is
 * counted three times — in a global (`udp9_seen`, .bss), in a file-scope static
 * (`udp9_static`, .bss, a local symbol) and in a pinned map (`gp_pkts`, the
 * reference: maps have always persisted) — and `gen` (.data, initialised) is left
 * alone. Across relinks the three must stay equal: an increment lost between a
 * copy of the globals and the swap would show as globals behind the map.
 * The pre-flight packets are UDP to port 53: they touch none of these. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gp_pkts SEC(".maps");

__u64 udp9_seen = 0;
static __u64 udp9_static = 0;
__u64 gen = 7;  /* .data */

SEC("xdp")
int global_persist(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);
	__u32 key = 0;
	__u64 *v;

	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->ihl != 5 || ip->protocol != IPPROTO_UDP || udp->dest != bpf_htons(9))
		return XDP_PASS;
	if (gen != 7)
		return XDP_ABORTED;
	__sync_fetch_and_add(&udp9_seen, 1);
	__sync_fetch_and_add(&udp9_static, 1);
	v = bpf_map_lookup_elem(&gp_pkts, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return XDP_DROP;  /* nothing answers port 9: keep the peer's ICMP out of it */
}

char LICENSE[] SEC("license") = "GPL";
