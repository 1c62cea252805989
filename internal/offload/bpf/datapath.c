// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// relay's kernel data path: ChannelData over UDP relayed at tc ingress (tcx), so that a
// bound channel's datagrams never reach relay's process. Userspace (offload.go) owns
// every decision: it writes the maps when pion reports a channel, a permission or an
// allocation, after the peer policy has passed the peer; this program only reads them.
// Whatever it does not handle it leaves alone (TCX_NEXT), and the stack hands it to
// relay's sockets as before.
//
// The kernel asks for a GPL-compatible license for bpf_redirect_neigh's neighbours and
// for kfuncs (bpf_cast_to_kern_ctx); the dual license is the usual answer.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "Dual MIT/GPL";

// tcx verdicts (linux/bpf.h of 6.6 and later; the build headers may be older).
#define TCX_NEXT -1
#define TCX_PASS 0
#define TCX_DROP 2
#define TCX_REDIRECT 7

// ip_summed values (include/linux/skbuff.h).
#define CHECKSUM_NONE 0
#define CHECKSUM_UNNECESSARY 1
#define CHECKSUM_COMPLETE 2
#define CHECKSUM_PARTIAL 3

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define IPPROTO_UDP 17
#define IP_HLEN 20
#define UDP_HLEN 8
#define CD_HLEN 4 // ChannelData header: channel number, length
#define HDRS (ETH_HLEN + IP_HLEN + UDP_HLEN)
#define LOOPBACK_IFINDEX 1 // lo is ifindex 1 in every network namespace
#define OUT_TTL 64         // what relay's own sockets send with
#define NSEC_PER_SEC 1000000000ULL
#define MAX_LISTEN_PORTS 8

struct ethhdr_ {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct iphdr_ {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct udphdr_ {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
};

// Set by userspace before loading (offload.go): the relay address, the relay port range
// and the UDP listener ports. Addresses and ports in network byte order.
volatile const __be32 relay_ip = 0;
volatile const __u16 relay_min = 0; // host byte order
volatile const __u16 relay_max = 0;
volatile const __be16 listen_ports[MAX_LISTEN_PORTS] = {};

// client -> peer: ChannelData from a client to a listener address.
struct c2p_key {
	__be32 client_ip;
	__be32 local_ip; // the listener's address; 0 for a wildcard listener
	__be16 client_port;
	__be16 local_port;
	__be16 channel;
	__u16 pad;
};

struct c2p_val {
	__u64 bytes; // payload relayed to the peer
	__u64 packets;
	__u32 alloc; // the allocation's id, for its permissions
	__be32 peer_ip;
	__be16 peer_port;
	__be16 relay_port;
	__u32 out_ifindex; // the way to the peer: 0 local, else the interface
	__u32 mtu;         // of out_ifindex
	__u32 bucket;      // token buckets (struct bucket), 0 for none
	__u32 user_bucket;
	__be32 learned_local; // wildcard listeners: the address this client sends to
};

// peer -> client: a datagram from a peer to a relay address with a channel bound.
struct p2c_key {
	__be32 peer_ip;
	__be16 peer_port;
	__be16 relay_port;
};

struct p2c_val {
	__u64 bytes; // payload relayed to the client
	__u64 packets;
	__u32 alloc;
	__be32 client_ip;
	__be32 local_ip; // 0 until learned, for wildcard listeners
	__be16 client_port;
	__be16 local_port;
	__be16 channel;
	__u16 pad;
	__u32 out_ifindex; // the way to the client: 0 local, else the interface
	__u32 mtu;
	__u32 bucket;
	__u32 user_bucket;
};

struct perm_key {
	__u32 alloc;
	__be32 peer_ip;
};

// A bandwidth cap as GCRA: tat is the theoretical arrival time (CLOCK_MONOTONIC ns) and
// a datagram of n bytes costs n*8e9/bps ns; it passes when that leaves tat at most a
// second ahead of now. Userspace maps the same array (BPF_F_MMAPABLE) and takes from the
// same buckets with the same compare-and-swap, so a cap holds across both paths.
struct bucket {
	__u64 tat;
	__u64 bps;
};

// Counters, per CPU, summed by userspace (relay_turn_relayed_*, relay_turn_dropped_total).
// Each direction's bytes follow its packets (relayed counts both).
enum {
	STAT_C2P_PACKETS,
	STAT_C2P_BYTES,
	STAT_P2C_PACKETS,
	STAT_P2C_BYTES,
	STAT_DROP_NO_PERMISSION,
	STAT_DROP_BANDWIDTH,
	STAT_PUNTED, // matched a channel, left to userspace (route, checksum state, MTU)
	STAT_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct c2p_key);
	__type(value, struct c2p_val);
	__uint(max_entries, 1); // sized by userspace
} c2p SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct p2c_key);
	__type(value, struct p2c_val);
	__uint(max_entries, 1);
} p2c SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct perm_key);
	__type(value, __u32);
	__uint(max_entries, 1);
} perms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct bucket);
	__uint(max_entries, 1);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_COUNT);
} stats SEC(".maps");

// The checksum state of the packet, which decides where it may go (see route).
struct sk_buff___relay {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *) __ksym;

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += n;
}

// take spends n bytes from a bucket; 1 if they pass.
static __always_inline int take(__u32 idx, __u32 n, __u64 now)
{
	if (!idx)
		return 1;
	struct bucket *b = bpf_map_lookup_elem(&buckets, &idx);
	if (!b)
		return 1;
	__u64 bps = b->bps;
	if (!bps)
		return 1;
	__u64 cost = (__u64)n * 8 * NSEC_PER_SEC / bps;
	// A few tries: another CPU (or relay) taking from the same bucket at the same
	// moment is rare, and a datagram that loses every race is dropped as over the cap.
	for (int i = 0; i < 4; i++) {
		__u64 tat = b->tat;
		__u64 t = tat > now ? tat : now;
		if (t + cost > now + NSEC_PER_SEC)
			return 0;
		if (__sync_val_compare_and_swap(&b->tat, tat, t + cost) == tat)
			return 1;
	}
	return 0;
}

// Ones'-complement arithmetic over 16-bit words as they lie in the packet: the sum does
// not depend on byte order as long as every word is read the same way.
static __always_inline __u32 csum_sub16(__u32 s, __u16 w) { return s + (__u16)~w; }
static __always_inline __u32 csum_add32(__u32 s, __u32 w) { return s + (w & 0xffff) + (w >> 16); }
static __always_inline __u32 csum_sub32(__u32 s, __u32 w) { return csum_sub16(csum_sub16(s, w & 0xffff), w >> 16); }

// byte_word is a lone byte as the 16-bit word it lies in reads, in the second half of
// the word when odd.
static __always_inline __u16 byte_word(__u8 b, int odd)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return odd ? (__u16)b << 8 : b;
#else
	return odd ? b : (__u16)b << 8;
#endif
}

static __always_inline __u16 csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

static __always_inline __u16 ip_checksum(struct iphdr_ *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 s = 0;
	ip->check = 0;
#pragma unroll
	for (int i = 0; i < IP_HLEN / 2; i++)
		s += w[i];
	return (__u16)~csum_fold(s);
}

// Where a rewritten datagram goes.
enum { PUNT, IN_PLACE, REDIRECT };

// route decides, before anything is written, how a datagram leaves: a local destination
// is delivered in place (the stack routes the rewritten packet up to the socket), which
// only a packet that came in on lo may do (elsewhere our own source address would be a
// martian) and not one whose skb->csum covers the old bytes (CHECKSUM_COMPLETE); a
// remote one is sent out of its interface with bpf_redirect_neigh, but not a
// CHECKSUM_PARTIAL packet, whose checksum offsets would point into the moved headers,
// nor one over the interface's MTU. Anything else is left to userspace.
static __always_inline int route(struct __sk_buff *skb, __u32 out_ifindex, __u32 mtu, __u32 tot_len, __u32 summed)
{
	if (out_ifindex == 0) {
		if (skb->ifindex != LOOPBACK_IFINDEX || summed == CHECKSUM_COMPLETE)
			return PUNT;
		return IN_PLACE;
	}
	if (out_ifindex == (__u32)-1 || summed == CHECKSUM_PARTIAL || tot_len > mtu)
		return PUNT;
	return REDIRECT;
}

static __always_inline int send(int how, __u32 out_ifindex)
{
	if (how == REDIRECT)
		return bpf_redirect_neigh(out_ifindex, NULL, 0, 0);
	return TCX_PASS;
}

static __always_inline int is_listen_port(__be16 port)
{
#pragma unroll
	for (int i = 0; i < MAX_LISTEN_PORTS; i++)
		if (listen_ports[i] && listen_ports[i] == port)
			return 1;
	return 0;
}

// Steps both directions share.

// admitted reports whether the allocation still holds a permission for the peer; a
// channel that outlived its permission has its data dropped (RFC 8656), here.
static __always_inline int admitted(__u32 alloc, __be32 peer_ip)
{
	struct perm_key pk = {.alloc = alloc, .peer_ip = peer_ip};
	if (bpf_map_lookup_elem(&perms, &pk))
		return 1;
	count(STAT_DROP_NO_PERMISSION, 1);
	return 0;
}

// within_caps takes n bytes from the allocation's and its user's buckets, and counts a
// drop when either is empty.
static __always_inline int within_caps(__u32 bucket, __u32 user_bucket, __u32 n)
{
	if (!bucket && !user_bucket)
		return 1;
	__u64 now = bpf_ktime_get_ns();
	if (take(bucket, n, now) && take(user_bucket, n, now))
		return 1;
	count(STAT_DROP_BANDWIDTH, 1);
	return 0;
}

// csum_begin starts the incremental UDP checksum update, before anything moves: out go
// the addresses, the ports and the length (twice: pseudo-header and header).
static __always_inline __u32 csum_begin(struct iphdr_ *ip, struct udphdr_ *udp)
{
	__u32 s = (__u16)~udp->check;
	s = csum_sub32(s, ip->saddr);
	s = csum_sub32(s, ip->daddr);
	s = csum_sub16(s, udp->len);
	s = csum_sub16(s, udp->len);
	s = csum_sub16(s, udp->source);
	s = csum_sub16(s, udp->dest);
	return s;
}

// csum_end brings in the new addresses, ports and length, and folds.
static __always_inline __u16 csum_end(__u32 s, __be32 saddr, __be32 daddr, __be16 sport, __be16 dport, __be16 len)
{
	s = csum_add32(s, saddr);
	s = csum_add32(s, daddr);
	s += len;
	s += len;
	s += sport;
	s += dport;
	__u16 check = (__u16)~csum_fold(s);
	return check ? check : 0xffff; // 0 would mean "no checksum"
}

// rewrite writes the new IP and UDP headers.
static __always_inline void rewrite(struct iphdr_ *ip, struct udphdr_ *udp, __be32 saddr, __be32 daddr,
				    __be16 sport, __be16 dport, __u32 ulen, __u16 check)
{
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->tot_len = bpf_htons(IP_HLEN + ulen);
	ip->ttl = OUT_TTL;
	ip->check = ip_checksum(ip);
	udp->source = sport;
	udp->dest = dport;
	udp->len = bpf_htons(ulen);
	udp->check = check;
}

// relayed counts a relayed datagram of n payload bytes on its channel and in total.
static __always_inline void relayed(__u64 *bytes, __u64 *packets, __u32 stat, __u32 n)
{
	__sync_fetch_and_add(bytes, n);
	__sync_fetch_and_add(packets, 1);
	count(stat, 1);
	count(stat + 1, n);
}

// Where the headers are after a helper moved the packet (NULL: shorter than need).
#define HEADERS(skb, need, ip, udp)                                                \
	({                                                                         \
		void *data_ = (void *)(long)(skb)->data;                           \
		void *end_ = (void *)(long)(skb)->data_end;                        \
		int ok_ = data_ + (need) <= end_;                                  \
		if (ok_) {                                                         \
			ip = data_ + ETH_HLEN;                                     \
			udp = data_ + ETH_HLEN + IP_HLEN;                          \
		}                                                                  \
		ok_ ? data_ : NULL;                                                \
	})

// client_to_peer relays ChannelData from a client: the 4-byte header goes, and the
// datagram leaves from the allocation's relay address to the peer.
static __always_inline int client_to_peer(struct __sk_buff *skb, __u32 summed)
{
	struct iphdr_ *ip;
	struct udphdr_ *udp;
	void *data = HEADERS(skb, HDRS + CD_HLEN, ip, udp);
	if (!data) {
		if (bpf_skb_pull_data(skb, HDRS + CD_HLEN))
			return TCX_NEXT;
		data = HEADERS(skb, HDRS + CD_HLEN, ip, udp);
		if (!data)
			return TCX_NEXT;
	}
	__u8 *cd = data + HDRS;
	if ((cd[0] & 0xc0) != 0x40)
		return TCX_NEXT; // STUN, not ChannelData
	__u32 n = ((__u32)cd[2] << 8) | cd[3];
	__u32 ulen = bpf_ntohs(udp->len);
	// Up to 3 bytes of padding to a multiple of 4 may follow (RFC 8656 §12.5); a length
	// that lies, or more trailing bytes, is userspace's business.
	if (ulen < UDP_HLEN + CD_HLEN + n || bpf_ntohs(ip->tot_len) != IP_HLEN + ulen)
		return TCX_NEXT;
	__u32 pad = ulen - (UDP_HLEN + CD_HLEN + n);
	if (pad > 3)
		return TCX_NEXT;
	__u32 newulen = UDP_HLEN + n;

	struct c2p_key k = {
		.client_ip = ip->saddr,
		.local_ip = ip->daddr,
		.client_port = udp->source,
		.local_port = udp->dest,
		.channel = *(__be16 *)cd,
	};
	struct c2p_val *v = bpf_map_lookup_elem(&c2p, &k);
	if (!v) {
		k.local_ip = 0;
		v = bpf_map_lookup_elem(&c2p, &k);
		if (!v)
			return TCX_NEXT;
	}
	if (!admitted(v->alloc, v->peer_ip))
		return TCX_DROP;
	int how = route(skb, v->out_ifindex, v->mtu, IP_HLEN + newulen, summed);
	if (how == PUNT) {
		count(STAT_PUNTED, 1);
		return TCX_NEXT;
	}
	if (!within_caps(v->bucket, v->user_bucket, n))
		return TCX_DROP;
	if (k.local_ip == 0 && v->learned_local != ip->daddr) {
		// A wildcard listener: the way back to this client leaves from the address it
		// sends to.
		struct p2c_key bk = {.peer_ip = v->peer_ip, .peer_port = v->peer_port, .relay_port = v->relay_port};
		struct p2c_val *b = bpf_map_lookup_elem(&p2c, &bk);
		if (b)
			b->local_ip = ip->daddr;
		v->learned_local = ip->daddr;
	}

	// The padding leaves the checksum with the ChannelData header: each byte in the
	// half of its 16-bit word its offset from the UDP header puts it in.
	__u8 padb[3] = {};
	__u32 padoff = HDRS + CD_HLEN + n;
	if (pad == 1 && bpf_skb_load_bytes(skb, padoff, padb, 1))
		return TCX_NEXT;
	if (pad == 2 && bpf_skb_load_bytes(skb, padoff, padb, 2))
		return TCX_NEXT;
	if (pad == 3 && bpf_skb_load_bytes(skb, padoff, padb, 3))
		return TCX_NEXT;
	data = HEADERS(skb, HDRS + CD_HLEN, ip, udp);
	if (!data)
		return TCX_NEXT;
	cd = data + HDRS;

	// A CHECKSUM_PARTIAL packet is one this host sent over lo and delivers in place:
	// it never leaves the host, so it goes without a UDP checksum (0, as IPv4 allows)
	// rather than one over data the stack would sum again.
	__u16 check = 0;
	if (udp->check && summed != CHECKSUM_PARTIAL) {
		__u32 s = csum_begin(ip, udp);
		s = csum_sub16(s, *(__u16 *)cd);
		s = csum_sub16(s, *(__u16 *)(cd + 2));
#pragma unroll
		for (int i = 0; i < 3; i++) {
			if (i < pad)
				s = csum_sub16(s, byte_word(padb[i], (n + i) & 1));
		}
		check = csum_end(s, relay_ip, v->peer_ip, v->relay_port, v->peer_port, bpf_htons(newulen));
	}
	__be32 peer_ip = v->peer_ip;
	__be16 peer_port = v->peer_port, relay_port = v->relay_port;
	__u32 out = v->out_ifindex;

	if (bpf_skb_adjust_room(skb, -CD_HLEN, BPF_ADJ_ROOM_NET, 0))
		return TCX_NEXT; // unchanged
	if (pad && bpf_skb_change_tail(skb, ETH_HLEN + IP_HLEN + newulen, 0))
		return TCX_DROP; // the header is gone already
	if (!HEADERS(skb, HDRS, ip, udp))
		return TCX_DROP; // cannot happen: the headers were there before
	rewrite(ip, udp, relay_ip, peer_ip, relay_port, peer_port, newulen, check);
	relayed(&v->bytes, &v->packets, STAT_C2P_PACKETS, n);
	return send(how, out);
}

// peer_to_client relays a datagram from a peer with a channel: a ChannelData header in
// front, and it leaves from the listener address to the client.
static __always_inline int peer_to_client(struct __sk_buff *skb, __u32 summed)
{
	struct iphdr_ *ip;
	struct udphdr_ *udp;
	if (!HEADERS(skb, HDRS, ip, udp))
		return TCX_NEXT;
	__u32 ulen = bpf_ntohs(udp->len);
	if (ulen < UDP_HLEN || bpf_ntohs(ip->tot_len) != IP_HLEN + ulen)
		return TCX_NEXT;
	__u32 n = ulen - UDP_HLEN;
	__u32 newulen = ulen + CD_HLEN;

	struct p2c_key k = {.peer_ip = ip->saddr, .peer_port = udp->source, .relay_port = udp->dest};
	struct p2c_val *v = bpf_map_lookup_elem(&p2c, &k);
	if (!v)
		return TCX_NEXT; // no channel: pion sends a Data indication
	if (!admitted(v->alloc, ip->saddr))
		return TCX_DROP;
	__be32 local_ip = v->local_ip;
	int how = route(skb, v->out_ifindex, v->mtu, IP_HLEN + newulen, summed);
	if (how == PUNT || local_ip == 0) {
		count(STAT_PUNTED, 1);
		return TCX_NEXT;
	}
	if (!within_caps(v->bucket, v->user_bucket, n))
		return TCX_DROP;

	__u16 check = 0;
	__be16 cdlen = bpf_htons(n);
	if (udp->check && summed != CHECKSUM_PARTIAL) {
		__u32 s = csum_begin(ip, udp);
		s += v->channel;
		s += cdlen;
		check = csum_end(s, local_ip, v->client_ip, v->local_port, v->client_port, bpf_htons(newulen));
	}
	__be32 client_ip = v->client_ip;
	__be16 client_port = v->client_port, local_port = v->local_port, channel = v->channel;
	__u32 out = v->out_ifindex;

	if (bpf_skb_adjust_room(skb, CD_HLEN, BPF_ADJ_ROOM_NET, 0))
		return TCX_NEXT;
	void *data = HEADERS(skb, HDRS + CD_HLEN, ip, udp);
	if (!data)
		return TCX_DROP;
	rewrite(ip, udp, local_ip, client_ip, local_port, client_port, newulen, check);
	__be16 *cd = data + HDRS;
	cd[0] = channel;
	cd[1] = cdlen;
	relayed(&v->bytes, &v->packets, STAT_P2C_PACKETS, n);
	return send(how, out);
}

SEC("tcx/ingress")
int relay_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr_ *eth = data;
	struct iphdr_ *ip = data + ETH_HLEN;
	struct udphdr_ *udp = data + ETH_HLEN + IP_HLEN;
	if (data + HDRS > end)
		return TCX_NEXT;
	if (eth->proto != bpf_htons(ETH_P_IP) || ip->ver_ihl != 0x45 || ip->protocol != IPPROTO_UDP)
		return TCX_NEXT;
	if (ip->frag_off & bpf_htons(0x3fff))
		return TCX_NEXT; // a fragment
	if (skb->gso_size)
		return TCX_NEXT; // several datagrams in one (UDP GSO/GRO)
	int c2p_dir = is_listen_port(udp->dest);
	__u16 dport = bpf_ntohs(udp->dest);
	if (!c2p_dir && (ip->daddr != relay_ip || dport < relay_min || dport > relay_max))
		return TCX_NEXT;

	struct sk_buff___relay *kskb = bpf_cast_to_kern_ctx(skb);
	__u32 summed = BPF_CORE_READ_BITFIELD(kskb, ip_summed);
	if (c2p_dir)
		return client_to_peer(skb, summed);
	return peer_to_client(skb, summed);
}
