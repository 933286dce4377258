/* An ordinary object whose entry tail-calls other programs of the same object
 * through a PROG_ARRAY that libbpf fills declaratively (.values), as libbpf's own
 * selftests and many real loaders do. UDP goes to `on_udp` (drops port 9, passes
 * the rest), ICMP to `on_icmp` (TX: bounces echo requests back unchanged, which the
 * chain's policy may log), anything else stays in the entry and passes. Each
 * target counts in `hits`, so a test can see that the tail call ran. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");  /* 0: entry, 1: on_udp, 2: on_icmp */

static __always_inline void hit(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("xdp")
int on_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct udphdr *udp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);

	hit(1);
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	return udp->dest == bpf_htons(9) ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int on_icmp(struct xdp_md *ctx)
{
	hit(2);
	return XDP_TX;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
	__array(values, int (void *));
} jump SEC(".maps") = {
	.values = {
		[0] = (void *)&on_udp,
		[1] = (void *)&on_icmp,
	},
};

SEC("xdp")
int tail_dispatch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	hit(0);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return XDP_PASS;
	if (ip->protocol == IPPROTO_UDP)
		bpf_tail_call(ctx, &jump, 0);
	else if (ip->protocol == IPPROTO_ICMP)
		bpf_tail_call(ctx, &jump, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
