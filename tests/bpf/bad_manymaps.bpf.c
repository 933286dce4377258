// An XDP program that uses 70 maps: more than the kernel's 64 per program
// (MAX_USED_MAPS), before even adding the rootlet's own maps.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAP(n) \
	struct { \
		__uint(type, BPF_MAP_TYPE_ARRAY); \
		__uint(max_entries, 1); \
		__type(key, __u32); \
		__type(value, __u64); \
	} m##n SEC(".maps")

MAP(0);
MAP(1);
MAP(2);
MAP(3);
MAP(4);
MAP(5);
MAP(6);
MAP(7);
MAP(8);
MAP(9);
MAP(10);
MAP(11);
MAP(12);
MAP(13);
MAP(14);
MAP(15);
MAP(16);
MAP(17);
MAP(18);
MAP(19);
MAP(20);
MAP(21);
MAP(22);
MAP(23);
MAP(24);
MAP(25);
MAP(26);
MAP(27);
MAP(28);
MAP(29);
MAP(30);
MAP(31);
MAP(32);
MAP(33);
MAP(34);
MAP(35);
MAP(36);
MAP(37);
MAP(38);
MAP(39);
MAP(40);
MAP(41);
MAP(42);
MAP(43);
MAP(44);
MAP(45);
MAP(46);
MAP(47);
MAP(48);
MAP(49);
MAP(50);
MAP(51);
MAP(52);
MAP(53);
MAP(54);
MAP(55);
MAP(56);
MAP(57);
MAP(58);
MAP(59);
MAP(60);
MAP(61);
MAP(62);
MAP(63);
MAP(64);
MAP(65);
MAP(66);
MAP(67);
MAP(68);
MAP(69);

#define USE(n) do { v = bpf_map_lookup_elem(&m##n, &key); if (v) sum += *v; } while (0)

SEC("xdp")
int many_maps(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *v, sum = 0;

	USE(0);
	USE(1);
	USE(2);
	USE(3);
	USE(4);
	USE(5);
	USE(6);
	USE(7);
	USE(8);
	USE(9);
	USE(10);
	USE(11);
	USE(12);
	USE(13);
	USE(14);
	USE(15);
	USE(16);
	USE(17);
	USE(18);
	USE(19);
	USE(20);
	USE(21);
	USE(22);
	USE(23);
	USE(24);
	USE(25);
	USE(26);
	USE(27);
	USE(28);
	USE(29);
	USE(30);
	USE(31);
	USE(32);
	USE(33);
	USE(34);
	USE(35);
	USE(36);
	USE(37);
	USE(38);
	USE(39);
	USE(40);
	USE(41);
	USE(42);
	USE(43);
	USE(44);
	USE(45);
	USE(46);
	USE(47);
	USE(48);
	USE(49);
	USE(50);
	USE(51);
	USE(52);
	USE(53);
	USE(54);
	USE(55);
	USE(56);
	USE(57);
	USE(58);
	USE(59);
	USE(60);
	USE(61);
	USE(62);
	USE(63);
	USE(64);
	USE(65);
	USE(66);
	USE(67);
	USE(68);
	USE(69);

	return sum == 12345 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
