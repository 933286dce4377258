// The no-gap suite's guard: counts UDP to the "must drop" port (9) and the
// "must pass" port (7777), drops the former. Always in the chain, so any
// packet that met a chain met it; GAP_VARIANT gives an upgrade a new digest.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef GAP_VARIANT
#define GAP_VARIANT 1
#endif

#define PORT_DROP 9
#define PORT_PASS 7777

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);	/* 0: port 9 seen, 1: port 7777 seen, 2: variant */
	__type(key, __u32);
	__type(value, __u64);
} gap_seen SEC(".maps");

static __always_inline int udp_dport(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return -1;
	return bpf_ntohs(udp->dest);
}

static __always_inline void count(__u32 key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&gap_seen, &key);

	if (v)
		__sync_fetch_and_add(v, n);
}

SEC("xdp")
#ifndef GAP_FUNC
#define GAP_FUNC gap_guard
#define GAP_DROP_VERDICT XDP_DROP
#endif
int GAP_FUNC(struct xdp_md *ctx)
{
	int port = udp_dport(ctx);

	if (port == PORT_DROP) {
		count(0, 1);
		return GAP_DROP_VERDICT;
	}
	if (port == PORT_PASS) {
		count(1, 1);
		count(2, GAP_VARIANT);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
