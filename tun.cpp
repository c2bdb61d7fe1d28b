// tun.cpp — the TUN device.
//
// Owns everything between the Stack and the kernel's TUN driver: opening
// /dev/net/tun (one fd per queue), naming the interface, setting its MTU and
// link state through ioctl, adding its addresses through rtnetlink, and
// moving batches of packets (TunBatch), the virtio-net header, GRO split and
// GSO coalescing kept behind them. The `ip` command is never run; the few
// netlink messages needed are built by hand below, bounds-checked.
//
// Sections, in the order a device is set up:
//   helpers      errno text, an owning fd
//   validation   TunConfig checked before any syscall
//   queues       /dev/net/tun + TUNSETIFF, and what their errnos mean
//   offload      IFF_VNET_HDR, TUNSETVNETHDRSZ, TUNSETOFFLOAD, with fallback
//   link         ifindex, MTU and IFF_UP through ioctl
//   rtnetlink    request builder, reply walker, RTM_NEWADDR, route and
//                link lookups
//   steering     a hand-assembled eBPF program for TUNSETSTEERINGEBPF
//   Tun          the public class
//   batches      TunBatch, Tun::read/write of batches

#include "faketcp.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

namespace faketcp {
namespace {

// ---------------------------------------------------------------------------
// Helpers: errno text and an owning fd
// ---------------------------------------------------------------------------

constexpr const char* kTunPath = "/dev/net/tun";
constexpr const char* kNeedCapNetAdmin =
    "needs CAP_NET_ADMIN (run as root or setcap cap_net_admin+ep)";
constexpr uint32_t kMinMtu = 68;          // the TUN driver's lower bound (ETH_MIN_MTU)
constexpr uint32_t kMaxMtu = 65535;       // the TUN driver's upper bound (MAX_MTU)
constexpr uint32_t kMinMtuIpv6 = 1280;    // below this the kernel removes IPv6 from a device
constexpr uint32_t kMaxQueues = 256;      // the TUN driver's MAX_TAP_QUEUES

Status invalid(std::string message) {
    return Status::error(Errc::invalid_argument, std::move(message));
}

// Owns one file descriptor; move-only so no error path can leak or double-close.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() { reset(); }
    UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = o.release();
        }
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;

    int get() const { return fd_; }
    int release() {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    // close() is not retried on EINTR: on Linux the fd is gone either way.
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

// A printable name for messages, before the kernel has picked one.
std::string display_name(const std::string& name) {
    return name.empty() ? std::string("a new TUN device") : name;
}

// ifreq with the interface name filled in; `name` is already validated to
// fit (shorter than IFNAMSIZ, no NUL).
ifreq ifreq_for(const std::string& name) {
    ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    return ifr;
}

// ---------------------------------------------------------------------------
// Validation: reject a bad TunConfig before touching the system
// ---------------------------------------------------------------------------

// The kernel's dev_valid_name() rules, checked here so the message can say
// which rule was broken instead of a bare EINVAL from TUNSETIFF.
Status validate_name(const std::string& name) {
    if (name.size() >= IFNAMSIZ) {
        return invalid("interface name \"" + name + "\" is " + std::to_string(name.size()) +
                       " bytes; Linux allows at most " + std::to_string(IFNAMSIZ - 1));
    }
    if (name == "." || name == "..") return invalid("interface name \"" + name + "\" is reserved");
    for (char c : name) {
        if (c == '\0' || c == '/' || c == ':' || c == ' ' || (c >= '\t' && c <= '\r')) {
            return invalid("interface name \"" + name +
                           "\" contains a character Linux forbids (NUL, '/', ':' or whitespace)");
        }
    }
    return {};
}

Status validate_pair(const char* what, Family family, const std::optional<IpAddr>& local,
                     const std::optional<IpAddr>& peer) {
    const std::string l = std::string("local_") + what, p = std::string("peer_") + what;
    if (peer && !local) return invalid(p + " is set but " + l + " is not; set both");
    const std::string ip = family == Family::v4 ? "an IPv4" : "an IPv6";
    if (local && local->family != family) return invalid(l + " is not " + ip + " address");
    if (peer && peer->family != family) return invalid(p + " is not " + ip + " address");
    if (local && local->is_unspecified()) return invalid(l + " is the unspecified address");
    if (peer && peer->is_unspecified()) return invalid(p + " is the unspecified address");
    if (local && peer && *local == *peer) {
        return invalid(l + " and " + p + " are both " + to_string(*local) +
                       "; the host and the stack need different addresses");
    }
    return {};
}

Status validate(const TunConfig& c) {
    if (Status s = validate_name(c.name); !s) return s;
    if (c.queues < 1 || c.queues > kMaxQueues) {
        return invalid("queues is " + std::to_string(c.queues) + "; the TUN driver allows 1.." +
                       std::to_string(kMaxQueues));
    }
    if (c.mtu < kMinMtu || c.mtu > kMaxMtu) {
        return invalid("mtu is " + std::to_string(c.mtu) + "; a TUN device allows " +
                       std::to_string(kMinMtu) + ".." + std::to_string(kMaxMtu));
    }
    if (Status s = validate_pair("v4", Family::v4, c.local_v4, c.peer_v4); !s) return s;
    if (Status s = validate_pair("v6", Family::v6, c.local_v6, c.peer_v6); !s) return s;
    if (c.peer_v6 && !c.up) {
        return invalid("peer_v6 needs up = true: Linux installs the route to an IPv6 peer only "
                       "for an address added to an up link");
    }
    if (c.local_v6 && c.mtu < kMinMtuIpv6) {
        return invalid("mtu is " + std::to_string(c.mtu) + " but IPv6 needs at least " +
                       std::to_string(kMinMtuIpv6) + "; raise mtu or drop the v6 addresses");
    }
    return {};
}

// ---------------------------------------------------------------------------
// Queues: /dev/net/tun and TUNSETIFF
// ---------------------------------------------------------------------------

Status open_error(int err) {
    switch (err) {
    case ENOENT:
        return Status::from_errno(std::string("opening ") + kTunPath, err,
                         "the device node is missing: load the tun module (modprobe tun) "
                         "or, in a container, pass the device (docker run --device "
                         "/dev/net/tun)");
    case ENODEV:
    case ENXIO:
        return Status::from_errno(std::string("opening ") + kTunPath, err,
                         "the tun driver is not loaded: modprobe tun");
    case EACCES:
    case EPERM:
        return Status::from_errno(std::string("opening ") + kTunPath, err,
                         "run as root, or make the device readable and writable (usually "
                         "mode 0666) and give the program CAP_NET_ADMIN "
                         "(setcap cap_net_admin+ep)");
    default:
        return Status::from_errno(std::string("opening ") + kTunPath, err);
    }
}

// An interface named `name` exists in this network namespace.
bool interface_exists(const std::string& name) {
    return !name.empty() && if_nametoindex(name.c_str()) != 0;
}

Status setiff_error(const std::string& name, int err) {
    const std::string op = "TUNSETIFF on " + display_name(name);
    switch (err) {
    case EPERM:
        return Status::from_errno(op, err,
                         std::string(kNeedCapNetAdmin) +
                             "; or the device is persistent and owned by another user");
    case EBUSY:
        return Status::from_errno(op, err, "the name " + name +
                                      " is in use: another process has that TUN device open; "
                                      "pick another name or leave it empty");
    case EINVAL:
        if (interface_exists(name)) {
            return Status::from_errno(op, err, "the name " + name +
                                          " is in use by a device that is not a TUN device, or "
                                          "by a TUN device with other flags (multi-queue, "
                                          "packet info); pick another name");
        }
        return Status::from_errno(op, err, "the kernel rejected the name or the flags");
    case ENFILE:
        return Status::from_errno(op, err, "no free name left for the pattern " + name);
    default:
        return Status::from_errno(op, err);
    }
}

// Opens one queue of the device `name` (empty: the kernel picks) and stores
// the name the kernel actually used in `name`.
Result<UniqueFd> open_queue(std::string& name, bool multi_queue, bool vnet_hdr) {
    // Non-blocking from the first syscall: the reactor never blocks on a queue.
    UniqueFd fd(::open(kTunPath, O_RDWR | O_CLOEXEC | O_NONBLOCK));
    if (fd.get() < 0) return open_error(errno);

    ifreq ifr = ifreq_for(name);
    // IFF_NO_PI: packets are bare IP, no 4-byte packet-information prefix.
    // IFF_VNET_HDR (Linux 2.6.27): a virtio-net header in front of each one.
    // It is a device-wide flag that every TUNSETIFF rewrites, so every queue
    // passes the same flags.
    ifr.ifr_flags = static_cast<short>(IFF_TUN | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0) |
                                       (vnet_hdr ? IFF_VNET_HDR : 0));
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) return setiff_error(name, errno);

    name.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
    return fd;
}

// ---------------------------------------------------------------------------
// Offload: virtio-net header size and TUNSETOFFLOAD
// ---------------------------------------------------------------------------

// Both settings are device-wide, so one queue's fd is enough. What the
// offloads mean for the bytes is in faketcp.cpp's "device offload" section.
Status enable_offload(int fd, const std::string& name) {
    // TUNSETVNETHDRSZ (Linux 2.6.35): 10 is the default already; set it so a
    // persistent device left at 12 by another program cannot shift our bytes.
    int size = static_cast<int>(offload::kVnetHdrLen);
    if (::ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) {
        const int err = errno;
        return Status::from_errno("TUNSETVNETHDRSZ " + std::to_string(size) + " on " + name, err);
    }
    // TUNSETOFFLOAD (Linux 2.6.27; the argument is the value, not a pointer):
    // the kernel may hand us packets with a partial checksum and TCP
    // super-packets. TSO is only honoured together with TUN_F_CSUM. No
    // TUN_F_TSO_ECN, TUN_F_UFO or TUN_F_USO4/6 (6.2): those stay segmented by
    // the kernel before they reach us.
    const unsigned long features = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    if (::ioctl(fd, TUNSETOFFLOAD, features) < 0) {
        const int err = errno;
        return Status::from_errno("TUNSETOFFLOAD (TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6) on " + name, err);
    }
    return {};
}

// NETIF_F_TSO_MANGLEID ("tx-tcp-mangleid-segmentation", Linux 4.6; set
// through SIOCETHTOOL ETHTOOL_SFEATURES, 2.6.39). GRO coalesces a burst of
// DF segments that all carry one IPv4 ID (fake TCP sends ID 0) into a
// SKB_GSO_TCP_FIXEDID super-packet, and a device without this feature gets
// such a packet re-segmented by the kernel first. TUN leaves it off; with it
// on, those bursts reach parse_rx() whole. Checked on 6.18 with a veth whose
// GRO coalesced 40 ID-0 segments: 40 reads without, one with.
Status enable_mangleid(int sock, const std::string& name) {
    const std::string what = "SIOCETHTOOL tx-tcp-mangleid-segmentation on " + name;
    constexpr char kFeature[] = "tx-tcp-mangleid-segmentation";
    auto ethtool = [&](void* data) {
        ifreq ifr = ifreq_for(name);
        ifr.ifr_data = static_cast<char*>(data);
        return ::ioctl(sock, SIOCETHTOOL, &ifr);
    };
    // How many feature names the kernel has, then the names.
    alignas(8) uint8_t info_buf[sizeof(ethtool_sset_info) + sizeof(uint32_t)] = {};
    ethtool_sset_info info{};
    info.cmd = ETHTOOL_GSSET_INFO;
    info.sset_mask = uint64_t{1} << ETH_SS_FEATURES;
    std::memcpy(info_buf, &info, sizeof info);
    if (ethtool(info_buf) < 0) {
        const int err = errno;
        return Status::from_errno(what + " (ETHTOOL_GSSET_INFO)", err);
    }
    std::memcpy(&info, info_buf, sizeof info);
    uint32_t count = 0;
    std::memcpy(&count, info_buf + sizeof info, sizeof count);
    if (!(info.sset_mask & (uint64_t{1} << ETH_SS_FEATURES)) || count == 0 || count > 4096) {
        return Status::from_errno(what + ": no feature names", EOPNOTSUPP);
    }
    std::vector<uint8_t> names(sizeof(ethtool_gstrings) + size_t{count} * ETH_GSTRING_LEN);
    ethtool_gstrings gs{};
    gs.cmd = ETHTOOL_GSTRINGS;
    gs.string_set = ETH_SS_FEATURES;
    gs.len = count;
    std::memcpy(names.data(), &gs, sizeof gs);
    if (ethtool(names.data()) < 0) {
        const int err = errno;
        return Status::from_errno(what + " (ETHTOOL_GSTRINGS)", err);
    }
    uint32_t bit = count;
    for (uint32_t i = 0; i < count && bit == count; ++i) {
        const char* n = reinterpret_cast<const char*>(names.data() + sizeof gs + size_t{i} * ETH_GSTRING_LEN);
        if (strnlen(n, ETH_GSTRING_LEN) == sizeof kFeature - 1 && std::memcmp(n, kFeature, sizeof kFeature - 1) == 0)
            bit = i;
    }
    if (bit == count) return Status::from_errno(what + ": this kernel has no such feature", EOPNOTSUPP);
    // Ask for that one bit.
    const uint32_t blocks = (count + 31) / 32;
    std::vector<uint8_t> req(sizeof(ethtool_sfeatures) + blocks * sizeof(ethtool_set_features_block));
    ethtool_sfeatures sf{};
    sf.cmd = ETHTOOL_SFEATURES;
    sf.size = blocks;
    std::memcpy(req.data(), &sf, sizeof sf);
    ethtool_set_features_block block{};
    block.valid = block.requested = uint32_t{1} << (bit % 32);
    std::memcpy(req.data() + sizeof sf + (bit / 32) * sizeof block, &block, sizeof block);
    const int r = ethtool(req.data());
    if (r < 0) {
        const int err = errno;
        return Status::from_errno(what + " (ETHTOOL_SFEATURES)", err);
    }
    if (r & (ETHTOOL_F_UNSUPPORTED | ETHTOOL_F_WISH)) {
        return Status::from_errno(what + ": the device refused it", EOPNOTSUPP);
    }
    return {};
}

// ---------------------------------------------------------------------------
// Link: ifindex, MTU and IFF_UP through ioctl
// ---------------------------------------------------------------------------

// Interface ioctls work on any socket; a datagram socket is the usual carrier.
Result<UniqueFd> control_socket() {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (s.get() < 0) {
        const int err = errno;
        return Status::from_errno("creating a control socket for interface ioctls", err);
    }
    return s;
}

// One interface ioctl on `name`; `ifr` carries the argument and the answer.
Status if_ioctl(int sock, unsigned long request, const char* request_name,
                const std::string& what, ifreq& ifr) {
    if (::ioctl(sock, request, &ifr) == 0) return {};
    const int err = errno;
    return Status::from_errno(what + " (" + request_name + ")", err,
                     err == EPERM ? std::string(kNeedCapNetAdmin) : std::string());
}

Result<int> query_ifindex(int sock, const std::string& name) {
    const std::string what = "looking up the index of " + name;
    ifreq ifr = ifreq_for(name);
    if (Status s = if_ioctl(sock, SIOCGIFINDEX, "SIOCGIFINDEX", what, ifr); !s) return s;
    return ifr.ifr_ifindex;
}

// Only changes what differs, so reopening a prepared persistent device
// does not need privileges it would not otherwise need.
Status set_mtu(int sock, const std::string& name, uint32_t mtu) {
    const std::string what = "setting MTU " + std::to_string(mtu) + " on " + name;
    ifreq ifr = ifreq_for(name);
    if (Status s = if_ioctl(sock, SIOCGIFMTU, "SIOCGIFMTU", what, ifr); !s) return s;
    if (ifr.ifr_mtu == static_cast<int>(mtu)) return {};
    ifr.ifr_mtu = static_cast<int>(mtu);
    return if_ioctl(sock, SIOCSIFMTU, "SIOCSIFMTU", what, ifr);
}

// The kernel queues packets routed into the TUN until the reader takes them;
// at its default of 500 a burst from many flows (one reply each) overflows
// while the reader is busy, and those packets are lost. Only raised, never
// lowered, and only when it differs (as for the MTU).
Status set_tx_queue_len(int sock, const std::string& name, uint32_t len) {
    const std::string what = "setting txqueuelen " + std::to_string(len) + " on " + name;
    ifreq ifr = ifreq_for(name);
    if (Status s = if_ioctl(sock, SIOCGIFTXQLEN, "SIOCGIFTXQLEN", what, ifr); !s) return s;
    if (ifr.ifr_qlen >= static_cast<int>(len)) return {};
    ifr.ifr_qlen = static_cast<int>(len);
    return if_ioctl(sock, SIOCSIFTXQLEN, "SIOCSIFTXQLEN", what, ifr);
}

Status bring_up(int sock, const std::string& name) {
    const std::string what = "bringing " + name + " up";
    ifreq ifr = ifreq_for(name);
    if (Status s = if_ioctl(sock, SIOCGIFFLAGS, "SIOCGIFFLAGS", what, ifr); !s) return s;
    if (ifr.ifr_flags & IFF_UP) return {};
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    return if_ioctl(sock, SIOCSIFFLAGS, "SIOCSIFFLAGS", what, ifr);
}

// ---------------------------------------------------------------------------
// rtnetlink: request builder, reply walker, addresses, lookups
// ---------------------------------------------------------------------------

// A netlink request in a fixed buffer. Every append is bounds-checked; one
// that does not fit marks the request overflowed instead of writing past
// the end, and transact() refuses an overflowed request.
class NlRequest {
public:
    NlRequest(uint16_t type, uint16_t flags) {
        nlmsghdr h{};
        h.nlmsg_type = type;
        h.nlmsg_flags = flags;
        append(&h, sizeof h);
    }

    // The family header (ifaddrmsg, rtmsg, ...) right after the netlink header.
    template <class T>
    void add_header(const T& family_header) {
        append(&family_header, sizeof family_header);
    }

    void add_attr(uint16_t type, const void* data, size_t len) {
        if (len > UINT16_MAX - NLA_HDRLEN) {
            overflow_ = true;
            return;
        }
        nlattr a{};
        a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
        a.nla_type = type;
        append(&a, sizeof a);
        append(data, len);
    }

    void add_u32(uint16_t type, uint32_t value) { add_attr(type, &value, sizeof value); }

    bool overflowed() const { return overflow_; }
    // Stamps length and sequence number into the header; returns the bytes.
    const uint8_t* finish(uint32_t seq) {
        nlmsghdr h;
        std::memcpy(&h, buf_.data(), sizeof h);
        h.nlmsg_len = static_cast<uint32_t>(len_);
        h.nlmsg_seq = seq;
        std::memcpy(buf_.data(), &h, sizeof h);
        return buf_.data();
    }
    size_t size() const { return len_; }

private:
    // Appends `len` bytes and pads to the 4-byte netlink alignment.
    void append(const void* data, size_t len) {
        const size_t padded = NLMSG_ALIGN(len);
        if (overflow_ || padded > buf_.size() - len_) {
            overflow_ = true;
            return;
        }
        std::memcpy(buf_.data() + len_, data, len);
        std::memset(buf_.data() + len_ + len, 0, padded - len);
        len_ += padded;
    }

    std::array<uint8_t, 256> buf_{};  // our largest request is under 100 bytes
    size_t len_ = 0;
    bool overflow_ = false;
};

// The payload of the first attribute of `type` in [p, p + n), walking
// nlattr/rtattr headers (same layout) without trusting any length.
std::optional<ByteView> find_attr(const uint8_t* p, size_t n, uint16_t type) {
    size_t off = 0;  // invariant: off <= n
    while (n - off >= NLA_HDRLEN) {
        nlattr a;
        std::memcpy(&a, p + off, sizeof a);
        if (a.nla_len < NLA_HDRLEN || a.nla_len > n - off) break;
        if ((a.nla_type & NLA_TYPE_MASK) == type) {
            return ByteView(p + off + NLA_HDRLEN, a.nla_len - NLA_HDRLEN);
        }
        const size_t step = NLA_ALIGN(a.nla_len);
        if (step > n - off) break;
        off += step;
    }
    return std::nullopt;
}

std::optional<ByteView> find_attr(ByteView v, uint16_t type) { return find_attr(v.data, v.size, type); }

// The attributes of a message whose family header is `header_size` bytes.
ByteView message_attrs(const uint8_t* msg, size_t len, size_t header_size) {
    const size_t start = NLMSG_HDRLEN + NLMSG_ALIGN(header_size);
    return start <= len ? ByteView(msg + start, len - start) : ByteView();
}

// The kernel's verdict on one request: 0 or an errno, and the text the
// kernel attached to an error (extended ack), if any.
struct NlAck {
    int error = 0;
    std::string kernel_message;
};

// Decodes one NLMSG_ERROR message of `len` bytes (an ack when error == 0).
std::optional<NlAck> decode_ack(const uint8_t* msg, size_t len, uint16_t flags) {
    if (len < NLMSG_HDRLEN + sizeof(nlmsgerr)) return std::nullopt;
    nlmsgerr e;
    std::memcpy(&e, msg + NLMSG_HDRLEN, sizeof e);
    NlAck ack;
    ack.error = e.error < 0 ? -e.error : e.error;
    if (ack.error == 0 || !(flags & NLM_F_ACK_TLVS)) return ack;
    // The TLVs follow the echoed request, which is only its header when capped.
    size_t echoed = 0;
    if (!(flags & NLM_F_CAPPED) && e.msg.nlmsg_len >= NLMSG_HDRLEN) {
        echoed = e.msg.nlmsg_len - NLMSG_HDRLEN;
    }
    const size_t tlv = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nlmsgerr) + echoed);
    if (tlv >= len) return ack;
    if (auto text = find_attr(msg + tlv, len - tlv, NLMSGERR_ATTR_MSG)) {
        const char* s = reinterpret_cast<const char*>(text->data);
        ack.kernel_message.assign(s, strnlen(s, text->size));
    }
    return ack;
}

// Walks one received datagram: messages answering `seq` go to on_reply,
// and the ack that ends the exchange is returned when present.
template <class OnReply>
std::optional<NlAck> scan_datagram(const uint8_t* p, size_t n, uint32_t seq, OnReply& on_reply) {
    size_t off = 0;  // invariant: off <= n
    while (n - off >= NLMSG_HDRLEN) {
        nlmsghdr h;
        std::memcpy(&h, p + off, sizeof h);
        if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > n - off) break;
        if (h.nlmsg_seq == seq) {
            if (h.nlmsg_type == NLMSG_ERROR) return decode_ack(p + off, h.nlmsg_len, h.nlmsg_flags);
            on_reply(p + off, static_cast<size_t>(h.nlmsg_len), h.nlmsg_type);
        }
        const size_t step = NLMSG_ALIGN(h.nlmsg_len);
        if (step > n - off) break;
        off += step;
    }
    return std::nullopt;
}

// A NETLINK_ROUTE socket that sends one request at a time and waits for its
// ack. Requests always carry NLM_F_ACK, so every exchange ends with one.
class Rtnl {
public:
    static Result<Rtnl> open() {
        UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
        if (fd.get() < 0) {
            const int err = errno;
            return Status::from_errno("creating a NETLINK_ROUTE socket", err);
        }
        // Bound the wait so a lost ack cannot hang the caller forever.
        timeval tv{};
        tv.tv_sec = 5;
        if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
            const int err = errno;
            return Status::from_errno("setting SO_RCVTIMEO on the NETLINK_ROUTE socket", err);
        }
        // Optional: CAP_ACK (Linux 4.3) keeps error acks small, EXT_ACK (4.12)
        // adds the kernel's own explanation. Older kernels just lack the text.
        const int one = 1;
        (void)::setsockopt(fd.get(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
        (void)::setsockopt(fd.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
        Rtnl r;
        r.fd_ = std::move(fd);
        r.rx_.resize(kRxSize);
        return r;
    }

    // Sends `req` and returns the kernel's verdict; replies to it (a GET's
    // answer) are passed to on_reply(msg, len, type). `what` names the
    // operation in error messages.
    template <class OnReply>
    Result<NlAck> transact(NlRequest& req, const std::string& what, OnReply&& on_reply) {
        if (req.overflowed()) {
            return Status::error(Errc::invalid_argument, what + ": netlink request too large");
        }
        const uint32_t seq = ++seq_;
        if (Status s = send(req.finish(seq), req.size(), what); !s) return s;
        return wait_ack(seq, what, on_reply);
    }

    Result<NlAck> transact(NlRequest& req, const std::string& what) {
        return transact(req, what, [](const uint8_t*, size_t, uint16_t) {});
    }

private:
    // A link dump with IFLA_AF_SPEC is a few KiB; leave ample room.
    static constexpr size_t kRxSize = 32768;

    Status send(const uint8_t* data, size_t len, const std::string& what) {
        sockaddr_nl kernel{};
        kernel.nl_family = AF_NETLINK;  // nl_pid 0: the kernel
        for (;;) {
            const ssize_t n = ::sendto(fd_.get(), data, len, 0,
                                       reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel);
            const int err = n < 0 ? errno : EMSGSIZE;  // a short send cannot happen on netlink
            if (n == static_cast<ssize_t>(len)) return {};
            if (err == EINTR) continue;
            return Status::from_errno(what + " (netlink send)", err);
        }
    }

    template <class OnReply>
    Result<NlAck> wait_ack(uint32_t seq, const std::string& what, OnReply& on_reply) {
        for (;;) {
            sockaddr_nl from{};
            socklen_t from_len = sizeof from;
            // MSG_TRUNC: n is the datagram's real size, so truncation is visible.
            const ssize_t n = ::recvfrom(fd_.get(), rx_.data(), rx_.size(), MSG_TRUNC,
                                         reinterpret_cast<sockaddr*>(&from), &from_len);
            const int err = n < 0 ? errno : 0;
            if (err == EINTR) continue;
            if (err == EAGAIN || err == EWOULDBLOCK) {
                return Status::from_errno(what + " (netlink)", ETIMEDOUT, "the kernel did not answer in 5 s");
            }
            if (err != 0) return Status::from_errno(what + " (netlink receive)", err);
            if (static_cast<size_t>(n) > rx_.size()) {
                return Status::from_errno(what + " (netlink receive)", EMSGSIZE, "reply larger than the buffer");
            }
            if (from.nl_pid != 0) continue;  // only the kernel's answers count
            if (auto ack = scan_datagram(rx_.data(), static_cast<size_t>(n), seq, on_reply)) {
                return *ack;
            }
        }
    }

    UniqueFd fd_;
    uint32_t seq_ = 0;
    std::vector<uint8_t> rx_;
};

// "<what>: <errno text> — <hint>; kernel: <extended ack>".
Status ack_error(const std::string& what, const NlAck& ack, std::string hint) {
    if (!ack.kernel_message.empty()) {
        hint += (hint.empty() ? "kernel: " : "; kernel: ") + ack.kernel_message;
    }
    return Status::from_errno(what, ack.error, hint);
}

std::string address_hint(Family family, int err, const std::string& name) {
    if (err == EPERM) return kNeedCapNetAdmin;
    if (family == Family::v6 && err == EACCES) {
        return "IPv6 is disabled on " + name + " (sysctl net.ipv6.conf." + name +
               ".disable_ipv6 or net.ipv6.conf.default.disable_ipv6)";
    }
    if (family == Family::v6 && (err == EAFNOSUPPORT || err == EOPNOTSUPP)) {
        return "this kernel has no IPv6 (booted with ipv6.disable=1?)";
    }
    return {};
}

std::string describe_address(const IpAddr& local, const std::optional<IpAddr>& peer) {
    return to_string(local) + (peer ? " peer " + to_string(*peer) : std::string());
}

// Adds `local` as a point-to-point address towards `peer` (IFA_LOCAL =
// local, IFA_ADDRESS = peer, /32 or /128), which makes the kernel route the
// peer address into the TUN for both families; without a peer, `local`
// alone with a host prefix. IPv6 skips duplicate address detection
// (IFA_F_NODAD): the address is usable at once instead of "tentative" for
// a second. NLM_F_REPLACE makes re-adding to a persistent device a no-op.
Status add_address(Rtnl& rtnl, int ifindex, const std::string& name, const IpAddr& local,
                   const std::optional<IpAddr>& peer) {
    const bool v6 = local.family == Family::v6;
    ifaddrmsg ifa{};
    ifa.ifa_family = static_cast<uint8_t>(v6 ? AF_INET6 : AF_INET);
    ifa.ifa_prefixlen = static_cast<uint8_t>(v6 ? 128 : 32);
    ifa.ifa_flags = static_cast<uint8_t>(v6 ? IFA_F_NODAD : 0);
    ifa.ifa_scope = RT_SCOPE_UNIVERSE;
    ifa.ifa_index = static_cast<uint32_t>(ifindex);

    NlRequest req(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    req.add_header(ifa);
    req.add_attr(IFA_LOCAL, local.bytes.data(), local.size());
    const IpAddr& address = peer ? *peer : local;
    req.add_attr(IFA_ADDRESS, address.bytes.data(), address.size());

    const std::string what = "adding " + describe_address(local, peer) + " to " + name +
                             " (RTM_NEWADDR)";
    Result<NlAck> ack = rtnl.transact(req, what);
    if (!ack) return ack.status();
    if (ack->error == 0) return {};
    return ack_error(what, *ack, address_hint(local.family, ack->error, name));
}

// What the kernel's route lookup says about one destination.
struct RouteLookup {
    int error = 0;               // non-zero: no route (ENETUNREACH, ...)
    uint8_t type = RTN_UNSPEC;   // RTN_LOCAL for our own addresses
    uint32_t oif = 0;            // outgoing interface
};

// RTM_GETROUTE for `dst`: the kernel's own lookup, as `ip route get` does.
Result<RouteLookup> lookup_route(Rtnl& rtnl, const IpAddr& dst) {
    const bool v6 = dst.family == Family::v6;
    rtmsg rtm{};
    rtm.rtm_family = static_cast<uint8_t>(v6 ? AF_INET6 : AF_INET);
    rtm.rtm_dst_len = static_cast<uint8_t>(v6 ? 128 : 32);
    NlRequest req(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_ACK);
    req.add_header(rtm);
    req.add_attr(RTA_DST, dst.bytes.data(), dst.size());

    RouteLookup out;
    auto on_reply = [&out](const uint8_t* msg, size_t len, uint16_t type) {
        if (type != RTM_NEWROUTE || len < NLMSG_HDRLEN + sizeof(rtmsg)) return;
        rtmsg r;
        std::memcpy(&r, msg + NLMSG_HDRLEN, sizeof r);
        out.type = r.rtm_type;
        auto oif = find_attr(message_attrs(msg, len, sizeof(rtmsg)), RTA_OIF);
        if (oif && oif->size >= sizeof(uint32_t)) std::memcpy(&out.oif, oif->data, sizeof out.oif);
    };
    Result<NlAck> ack = rtnl.transact(req, "looking up the route to " + to_string(dst), on_reply);
    if (!ack) return ack.status();
    out.error = ack->error;
    return out;
}

// How long open() waits for a new IPv6 address to become routable.
constexpr int kReadyPolls = 2000;
constexpr long kReadyPollNanos = 1000000;  // 1 ms: 2 s in all

// The kernel inserts the local and the peer route of a new IPv6 address
// from its DAD worker a moment after acking RTM_NEWADDR, IFA_F_NODAD or not
// (without the wait, ~20% of sends right after open() failed with
// ENETUNREACH in testing). Polls the kernel's own lookups until `local` is
// local and `peer` leaves through the TUN, so the device is ready to use
// when open() returns.
Status wait_until_routed(Rtnl& rtnl, int ifindex, const std::string& name, const IpAddr& local,
                         const std::optional<IpAddr>& peer) {
    RouteLookup l, p;
    for (int i = 0; i < kReadyPolls; ++i) {
        Result<RouteLookup> lr = lookup_route(rtnl, local);
        if (!lr) return lr.status();
        l = *lr;
        bool ready = l.error == 0 && l.type == RTN_LOCAL;
        if (ready && peer) {
            Result<RouteLookup> pr = lookup_route(rtnl, *peer);
            if (!pr) return pr.status();
            p = *pr;
            ready = p.error == 0 && p.oif == static_cast<uint32_t>(ifindex);
        }
        if (ready) return {};
        timespec ts{0, kReadyPollNanos};
        ::nanosleep(&ts, nullptr);
    }
    std::string msg = "waiting for " + describe_address(local, peer) + " on " + name +
                      " to become routable: after 2 s ";
    if (l.type != RTN_LOCAL) {
        msg += to_string(local) + " is still not a local address";
    } else if (p.error != 0) {
        msg += Status::from_errno("the kernel has no route to " + to_string(*peer), p.error).message();
    } else {
        msg += to_string(*peer) + " is routed via ifindex " + std::to_string(p.oif) +
               ", not " + name;
    }
    msg += " \u2014 check for a conflicting route or rule (ip -6 route get ADDRESS)";
    return Status::error(Errc::system, std::move(msg), ETIMEDOUT);
}

// What the link info of a device says about it as a TUN device.
struct TunLinkInfo {
    bool is_tun = false;     // IFLA_INFO_KIND is "tun" (TUN or TAP)
    std::optional<bool> pi;  // IFLA_TUN_PI (Linux 4.15); unset on older kernels
};

// Reads the link info of `ifindex`. Needed because TUNGETIFF cannot tell
// whether packets carry packet information: it reports IFF_NOFILTER in the
// same bit as IFF_NO_PI.
Result<TunLinkInfo> tun_link_info(Rtnl& rtnl, int ifindex, const std::string& what) {
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = ifindex;
    NlRequest req(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK);
    req.add_header(ifi);
    req.add_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);

    TunLinkInfo out;
    auto on_reply = [&out](const uint8_t* msg, size_t len, uint16_t type) {
        if (type != RTM_NEWLINK) return;
        auto info = find_attr(message_attrs(msg, len, sizeof(ifinfomsg)), IFLA_LINKINFO);
        if (!info) return;
        auto kind = find_attr(*info, IFLA_INFO_KIND);
        auto data = find_attr(*info, IFLA_INFO_DATA);
        if (!kind || kind->size < 3 || std::memcmp(kind->data, "tun", 3) != 0) return;
        out.is_tun = true;
        auto flag = data ? find_attr(*data, IFLA_TUN_PI) : std::nullopt;
        if (flag && flag->size >= 1) out.pi = flag->data[0] != 0;
    };
    Result<NlAck> ack = rtnl.transact(req, what + " (RTM_GETLINK)", on_reply);
    if (!ack) return ack.status();
    if (ack->error != 0) return ack_error(what + " (RTM_GETLINK)", *ack, {});
    return out;
}

// ---------------------------------------------------------------------------
// Steering: which queue the kernel hands a packet to (TUNSETSTEERINGEBPF)
// ---------------------------------------------------------------------------
//
// Facts from the kernel's drivers/net/tun.c and net/core/filter.c:
// - tun_select_queue() (the device's ndo_select_queue, which sets the
//   skb->queue_mapping that tun_net_xmit() delivers by) runs the steering
//   program if one is set, else tun_automq_select_queue().
// - automq: every write from userspace records its flow hash -> the queue
//   it was written on (tun_flow_update), only while no steering program is
//   set; an entry idle for TUN_FLOW_EXPIRE (3 * HZ) is dropped by a timer,
//   and an unknown flow goes to queue (hash * numqueues) >> 32. So a
//   connection quiet for 3 s may come back on any queue: with one Stack
//   per queue, a Stack that never saw it. Hence deterministic steering.
//   (Measured on 6.18 with 4 queues: the kernel's SYN-ACK to a SYN written
//   on queue q came back on q for 12 of 40 flows, i.e. chance, not even
//   the learnt queue.)
// - tun_ebpf_select_queue(): `u16 ret = bpf_prog_run_clear_cb(prog, skb);
//   return ret % numqueues;`. The program's u32 result is truncated to 16
//   bits first, so the program reduces modulo the queue count itself: a
//   port sum reaches 131070, and (sum mod 65536) % 3 != sum % 3. (With the
//   modulo below removed, test/test_sharding.cpp's 3-queue SYN test fails:
//   sport 60000 + dport 40000 arrives on queue 0, not 1.)
// - TUNSETSTEERINGEBPF (Linux 4.16) takes a pointer to an int: a
//   BPF_PROG_TYPE_SOCKET_FILTER program fd, or -1 to remove it. The device
//   takes its own reference (bpf_prog_get_type), so ours is closed at once.
//   It is per device, not per queue.
// - On that transmit path a TUN device (hard_header_len 0, no header
//   create op) has skb->data at the IP header, and LD_ABS / LD_IND offsets
//   are relative to skb->data. The verifier rewrites them into calls
//   (bpf_gen_ld_abs) that need the context in r6, clobber r1-r5, return the
//   value in host byte order, and end the program with r0 = 0 when the
//   load is out of bounds: a short packet goes to queue 0.

// A tiny eBPF assembler: one method per instruction, forward jumps to
// labels resolved by finish(). Registers are BPF_REG_*.
class BpfAsm {
public:
    using Label = size_t;
    Label label() {
        labels_.push_back(kUnbound);
        return labels_.size() - 1;
    }
    void bind(Label l) { labels_[l] = code_.size(); }

    void mov_reg(uint8_t dst, uint8_t src) { emit(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0); }
    void mov_imm(uint8_t dst, int32_t imm) { emit(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm); }
    void alu_imm(uint8_t op, uint8_t dst, int32_t imm) { emit(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm); }
    void alu_reg(uint8_t op, uint8_t dst, uint8_t src) { emit(BPF_ALU64 | op | BPF_X, dst, src, 0, 0); }
    // r0 = the packet's bytes at `off` (BPF_B or BPF_H), big-endian.
    void ld_abs(uint8_t size, int32_t off) { emit(BPF_LD | size | BPF_ABS, 0, 0, 0, off); }
    // r0 = the packet's bytes at `src` + `off`.
    void ld_ind(uint8_t size, uint8_t src, int32_t off) { emit(BPF_LD | size | BPF_IND, 0, src, 0, off); }
    // if (dst `op` imm) goto to;
    void jump_if(uint8_t op, uint8_t dst, int32_t imm, Label to) { jump(BPF_JMP | op | BPF_K, dst, imm, to); }
    void jump(Label to) { jump(BPF_JMP | BPF_JA, 0, 0, to); }
    void exit() { emit(BPF_JMP | BPF_EXIT, 0, 0, 0, 0); }

    // Resolves the jumps; false if a label was never bound.
    bool finish() {
        for (const Fixup& f : fixups_) {
            const size_t target = labels_[f.label];
            if (target == kUnbound || target <= f.at) return false;  // forward jumps only
            code_[f.at].off = static_cast<int16_t>(target - f.at - 1);
        }
        fixups_.clear();
        return true;
    }
    const std::vector<bpf_insn>& code() const { return code_; }

private:
    static constexpr size_t kUnbound = SIZE_MAX;
    struct Fixup {
        size_t at;
        Label label;
    };
    void emit(uint8_t opcode, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
        bpf_insn i;
        std::memset(&i, 0, sizeof i);
        i.code = opcode;
        i.dst_reg = dst & 0xf;
        i.src_reg = src & 0xf;
        i.off = off;
        i.imm = imm;
        code_.push_back(i);
    }
    void jump(uint8_t opcode, uint8_t dst, int32_t imm, Label to) {
        fixups_.push_back({code_.size(), to});
        emit(opcode, dst, 0, 0, imm);
    }
    std::vector<bpf_insn> code_;
    std::vector<size_t> labels_;
    std::vector<Fixup> fixups_;
};

constexpr int kIpProtoTcp = 6;

#ifndef TUNSETSTEERINGEBPF  // linux/if_tun.h before 4.16
#define TUNSETSTEERINGEBPF _IOR('T', 224, int)
#endif

// queue = (TCP source port + TCP destination port) % shards for IPv4 (IHL
// honoured; the Stack drops options anyway) and IPv6 without extension
// headers; 0 for anything else. IPv4 fragments are not special-cased: the
// Stack drops them on whatever queue they arrive.
std::vector<bpf_insn> port_sum_program(uint32_t shards) {
    BpfAsm a;
    const auto v4 = a.label(), v6 = a.label(), ports = a.label(), other = a.label();
    a.mov_reg(BPF_REG_6, BPF_REG_1);       // r6 = skb: LD_ABS/LD_IND read it from r6
    a.ld_abs(BPF_B, 0);                    // r0 = version << 4 | IHL
    a.mov_reg(BPF_REG_7, BPF_REG_0);       // r7 = the same byte
    a.alu_imm(BPF_RSH, BPF_REG_0, 4);      // r0 = IP version
    a.jump_if(BPF_JEQ, BPF_REG_0, 4, v4);
    a.jump_if(BPF_JEQ, BPF_REG_0, 6, v6);
    a.jump(other);
    a.bind(v4);
    a.ld_abs(BPF_B, 9);                    // IPv4 protocol
    a.jump_if(BPF_JNE, BPF_REG_0, kIpProtoTcp, other);
    a.alu_imm(BPF_AND, BPF_REG_7, 0x0f);   // r7 = IHL * 4: the TCP header's offset
    a.alu_imm(BPF_LSH, BPF_REG_7, 2);
    a.jump(ports);
    a.bind(v6);
    a.ld_abs(BPF_B, 6);                    // IPv6 next header
    a.jump_if(BPF_JNE, BPF_REG_0, kIpProtoTcp, other);
    a.mov_imm(BPF_REG_7, 40);              // r7 = the fixed IPv6 header length
    a.bind(ports);
    a.ld_ind(BPF_H, BPF_REG_7, 0);         // r0 = TCP source port
    a.mov_reg(BPF_REG_8, BPF_REG_0);       // r8: LD_IND clobbers r1-r5 only
    a.ld_ind(BPF_H, BPF_REG_7, 2);         // r0 = TCP destination port
    a.alu_reg(BPF_ADD, BPF_REG_0, BPF_REG_8);
    a.alu_imm(BPF_MOD, BPF_REG_0, static_cast<int32_t>(shards));
    a.exit();
    a.bind(other);
    a.mov_imm(BPF_REG_0, 0);
    a.exit();
    if (!a.finish()) return {};
    return a.code();
}

long bpf_syscall(int cmd, bpf_attr& attr) {
    return ::syscall(__NR_bpf, cmd, &attr, sizeof attr);
}

// BPF_PROG_LOAD of a socket filter; on a verifier refusal the message
// carries the first lines of the verifier's log.
Result<UniqueFd> load_socket_filter(const std::vector<bpf_insn>& code, const std::string& what) {
    static const char kLicense[] = "GPL";  // no GPL-only helper is called; any string would do
    auto load = [&](char* log, uint32_t log_size) {
        bpf_attr attr;
        std::memset(&attr, 0, sizeof attr);
        attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        attr.insns = reinterpret_cast<uintptr_t>(code.data());
        attr.insn_cnt = static_cast<uint32_t>(code.size());
        attr.license = reinterpret_cast<uintptr_t>(kLicense);
        attr.log_buf = reinterpret_cast<uintptr_t>(log);
        attr.log_size = log_size;
        attr.log_level = log ? 1 : 0;
        std::memcpy(attr.prog_name, "faketcp_steer", sizeof "faketcp_steer");  // bpftool prog shows it
        long fd = -1;
        for (int attempt = 0; attempt < 5; ++attempt) {  // EAGAIN: retried a few times, as libbpf does
            fd = bpf_syscall(BPF_PROG_LOAD, attr);
            if (fd >= 0 || (errno != EINTR && errno != EAGAIN)) break;
        }
        return fd;
    };
    const long fd = load(nullptr, 0);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    const int err = errno;
    const std::string op = what + ": loading the eBPF program (bpf BPF_PROG_LOAD)";
    switch (err) {
    case ENOSYS:
        return Status::from_errno(op, err, "this kernel has no bpf(2) system call (CONFIG_BPF_SYSCALL, Linux 3.18)");
    case EPERM:
        return Status::from_errno(op, err,
                         "needs CAP_BPF (Linux 5.8) or CAP_SYS_ADMIN (run as root), or sysctl "
                         "kernel.unprivileged_bpf_disabled=0");
    case EINVAL:
    case EACCES: {
        // Load again with the verifier's log to say why.
        std::vector<char> log(16384, '\0');
        if (load(log.data(), static_cast<uint32_t>(log.size() - 1)) >= 0) {
            return Status::from_errno(op, err, "refused, then accepted with the verifier log on; retry");
        }
        std::string text(log.data(), strnlen(log.data(), log.size()));
        if (text.size() > 600) text = text.substr(text.size() - 600);  // the reason is at the end
        for (char& c : text) if (c == '\n') c = ' ';
        return Status::from_errno(op, err, "the kernel's verifier refused it: " + text);
    }
    default:
        return Status::from_errno(op, err);
    }
}

// TUNSETSTEERINGEBPF with a program fd or -1.
Status set_steering(int queue_fd, int prog_fd, const std::string& what) {
    int arg = prog_fd;
    if (::ioctl(queue_fd, TUNSETSTEERINGEBPF, &arg) == 0) return {};
    const int err = errno;
    switch (err) {
    case EINVAL:
    case ENOTTY:
        return Status::from_errno(what + " (TUNSETSTEERINGEBPF)", err,
                         "queue steering by eBPF needs Linux 4.16; without it, serve every queue "
                         "from one thread (StackDriver::attach)");
    case EBADFD:
        return Status::from_errno(what + " (TUNSETSTEERINGEBPF)", err, "the fd is not attached to a TUN device");
    default:
        return Status::from_errno(what + " (TUNSETSTEERINGEBPF)", err);
    }
}

}  // namespace

// ---------------------------------------------------------------------------
// Tun
// ---------------------------------------------------------------------------

Tun::~Tun() { close_all(); }

Tun::Tun(Tun&& o) noexcept
    : name_(std::move(o.name_)),
      ifindex_(o.ifindex_),
      fds_(std::move(o.fds_)),
      vnet_hdr_len_(o.vnet_hdr_len_),
      offload_note_(std::move(o.offload_note_)) {
    o.fds_.clear();
    o.name_.clear();
    o.ifindex_ = 0;
    o.vnet_hdr_len_ = 0;
    o.offload_note_.clear();
}

Tun& Tun::operator=(Tun&& o) noexcept {
    if (this != &o) {
        close_all();
        name_ = std::move(o.name_);
        ifindex_ = o.ifindex_;
        fds_ = std::move(o.fds_);
        vnet_hdr_len_ = o.vnet_hdr_len_;
        offload_note_ = std::move(o.offload_note_);
        o.fds_.clear();
        o.name_.clear();
        o.ifindex_ = 0;
        o.vnet_hdr_len_ = 0;
        o.offload_note_.clear();
    }
    return *this;
}

void Tun::close_all() {
    // A non-persistent device disappears with its last queue fd.
    for (int fd : fds_) {
        if (fd >= 0) ::close(fd);
    }
    fds_.clear();
    name_.clear();
    ifindex_ = 0;
    vnet_hdr_len_ = 0;
    offload_note_.clear();
}

// Steps in order: validate, open every queue (with offload, or again without
// if the kernel refuses it), MTU, link up, addresses.
// Up comes before the addresses because Linux installs the route to an
// IPv6 peer only for an address added to an up link. Each opened fd moves
// into `tun` at once, so any early return closes them all and the kernel
// removes the half-configured device.
Result<Tun> Tun::open(const TunConfig& config) {
    if (Status s = validate(config); !s) return s;

    Tun tun;
    std::string name;
    const bool multi_queue = config.queues > 1;
    // Offload is probed first, before anything else is configured: if the
    // kernel refuses it, closing the queues removes the half-made device (a
    // persistent one merely loses IFF_VNET_HDR) and they are opened again
    // without, under the name asked for (not the one the kernel picked).
    for (bool vnet : {config.offload, false}) {
        name = config.name;
        tun.fds_.reserve(config.queues);
        for (uint32_t q = 0; q < config.queues; ++q) {
            // Queue 0 may let the kernel pick; the rest attach to the name it gave.
            Result<UniqueFd> fd = open_queue(name, multi_queue, vnet);
            if (!fd) return fd.status();
            tun.fds_.push_back(fd->release());
        }
        if (!vnet) break;
        Status s = enable_offload(tun.fds_[0], name);
        if (s) {
            tun.vnet_hdr_len_ = offload::kVnetHdrLen;
            break;
        }
        tun.close_all();
        tun.offload_note_ = s.message();
    }
    tun.name_ = name;

    Result<UniqueFd> sock = control_socket();
    if (!sock) return sock.status();
    Result<int> ifindex = query_ifindex(sock->get(), name);
    if (!ifindex) return ifindex.status();
    tun.ifindex_ = *ifindex;
    if (tun.vnet_hdr_len_ != 0) {
        // Not fatal: without it only fixed-ID GRO bursts arrive segmented.
        if (Status s = enable_mangleid(sock->get(), name); !s) tun.offload_note_ = s.message();
    }

    if (Status s = set_mtu(sock->get(), name, config.mtu); !s) return s;
    if (config.tx_queue_len != 0) {
        if (Status s = set_tx_queue_len(sock->get(), name, config.tx_queue_len); !s) return s;
    }
    if (config.up) {
        if (Status s = bring_up(sock->get(), name); !s) return s;
    }
    if (!config.local_v4 && !config.local_v6) return tun;

    Result<Rtnl> rtnl = Rtnl::open();
    if (!rtnl) return rtnl.status();
    if (config.local_v4) {
        Status s = add_address(*rtnl, tun.ifindex_, name, *config.local_v4, config.peer_v4);
        if (!s) return s;
    }
    if (config.local_v6) {
        Status s = add_address(*rtnl, tun.ifindex_, name, *config.local_v6, config.peer_v6);
        if (!s) return s;
        // A down link has no routes to wait for; validate() refused a peer there.
        if (config.up) {
            s = wait_until_routed(*rtnl, tun.ifindex_, name, *config.local_v6, config.peer_v6);
            if (!s) return s;
        }
    }
    return tun;
}

// Checks everything before changing anything: on error the fd is left open,
// unmodified and still the caller's; on success the Tun owns it. O_NONBLOCK
// is set on the open file description, shared with any fd duplicated from it.
Result<Tun> Tun::adopt(int fd) {
    const std::string what = "adopting fd " + std::to_string(fd);
    if (fd < 0) return invalid(what + ": not a file descriptor");

    ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    if (::ioctl(fd, TUNGETIFF, &ifr) < 0) {
        const int err = errno;
        if (err == EBADF) return Status::from_errno(what + " (TUNGETIFF)", err, "the fd is not open");
        return Status::from_errno(what + " (TUNGETIFF)", err,
                         "not a TUN device fd, or one not yet attached with TUNSETIFF");
    }
    const std::string name(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
    if (!(ifr.ifr_flags & IFF_TUN)) {
        return invalid(what + ": " + name + " is a TAP device; an IP-level TUN device is needed");
    }
    // Opened with IFF_VNET_HDR: every packet carries a virtio-net header,
    // which we handle only at its default size. Its offloads (TUNSETOFFLOAD)
    // are whatever the opener chose; parse_rx() copes with any of them.
    size_t vnet_hdr_len = 0;
    if (ifr.ifr_flags & IFF_VNET_HDR) {
        int size = 0;
        if (::ioctl(fd, TUNGETVNETHDRSZ, &size) < 0) {
            const int err = errno;
            return Status::from_errno(what + " (TUNGETVNETHDRSZ)", err);
        }
        if (size != static_cast<int>(offload::kVnetHdrLen)) {
            return invalid(what + ": " + name + " has " + std::to_string(size) +
                           "-byte virtio-net headers; only " +
                           std::to_string(offload::kVnetHdrLen) +
                           " is supported: set TUNSETVNETHDRSZ 10 or open it without IFF_VNET_HDR");
        }
        vnet_hdr_len = offload::kVnetHdrLen;
    }

    Result<UniqueFd> sock = control_socket();
    if (!sock) return sock.status();
    int ifindex = 0;
    if (Result<int> idx = query_ifindex(sock->get(), name)) {
        ifindex = *idx;
    } else if (idx.status().sys_errno() != ENODEV) {
        return idx.status();
    }  // ENODEV: the device lives in another network namespace; ifindex stays 0.

    if (ifindex != 0) {
        Result<Rtnl> rtnl = Rtnl::open();
        if (!rtnl) return rtnl.status();
        Result<TunLinkInfo> info = tun_link_info(*rtnl, ifindex, what);
        if (!info) return info.status();
        if (info->pi.value_or(false)) {
            return invalid(what + ": " + name +
                           " was opened without IFF_NO_PI, so packets carry a 4-byte prefix; "
                           "open it with IFF_TUN | IFF_NO_PI");
        }
        // Not a TUN device here: a namesake of a device in another namespace.
        if (!info->is_tun) ifindex = 0;
    }

    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        const int err = errno;
        return Status::from_errno(what + ": setting O_NONBLOCK (fcntl)", err);
    }

    Tun tun;
    tun.name_ = name;
    tun.ifindex_ = ifindex;
    tun.fds_.push_back(fd);
    tun.vnet_hdr_len_ = vnet_hdr_len;
    return tun;
}

Status Tun::steer_by_ports(uint32_t shards) {
    if (shards == 0) shards = static_cast<uint32_t>(fds_.size());
    const std::string what = "steering " + (name_.empty() ? std::string("the TUN device") : name_) +
                             " by TCP ports over " + std::to_string(shards) + " queues";
    if (fds_.empty()) return invalid(what + ": the Tun is not open");
    if (shards > kMaxQueues) {
        return invalid(what + ": the TUN driver has at most " + std::to_string(kMaxQueues) + " queues");
    }
    const std::vector<bpf_insn> code = port_sum_program(shards);
    if (code.empty()) return invalid(what + ": internal error assembling the eBPF program");
    Result<UniqueFd> prog = load_socket_filter(code, what);
    if (!prog) return prog.status();
    return set_steering(fds_[0], prog->get(), what);  // the device keeps its own reference
}

Status Tun::clear_steering() {
    const std::string what = "removing the queue steering of " +
                             (name_.empty() ? std::string("the TUN device") : name_);
    if (fds_.empty()) return invalid(what + ": the Tun is not open");
    return set_steering(fds_[0], -1, what);
}

// The hot path: one syscall per packet, no allocation. An out-of-range
// queue gives -EINVAL rather than reading past fds_.
long Tun::read(size_t queue, uint8_t* buf, size_t cap) const {
    if (queue >= fds_.size()) return -EINVAL;
    for (;;) {
        const ssize_t n = ::read(fds_[queue], buf, cap);
        if (n >= 0) return static_cast<long>(n);
        if (errno != EINTR) return -errno;
    }
}

long Tun::write(size_t queue, const uint8_t* data, size_t len) const {
    if (queue >= fds_.size()) return -EINVAL;
    for (;;) {
        const ssize_t n = ::write(fds_[queue], data, len);
        if (n >= 0) return static_cast<long>(n);
        if (errno != EINTR) return -errno;
    }
}

// The TUN driver builds one packet from all the iovecs of one writev().
long Tun::writev(size_t queue, const ByteView* parts, size_t count) const {
    if (queue >= fds_.size() || count > kMaxWriteParts) return -EINVAL;
    iovec iov[kMaxWriteParts];
    for (size_t i = 0; i < count; ++i) {
        iov[i].iov_base = const_cast<uint8_t*>(parts[i].data);  // writev does not write to it
        iov[i].iov_len = parts[i].size;
    }
    for (;;) {
        const ssize_t n = ::writev(fds_[queue], iov, static_cast<int>(count));
        if (n >= 0) return static_cast<long>(n);
        if (errno != EINTR) return -errno;
    }
}


// ---------------------------------------------------------------------------
// Batches: TunBatch and Tun::read/write over it
// ---------------------------------------------------------------------------
//
// The virtio-net header ends here: reads are checked and super-packets split
// (offload::parse_rx, rx_segment), writes grouped by flow and coalesced
// (offload::FlowGrouper, gso_run, gso_header), all pure functions of the
// wire code in faketcp.cpp. TunBatch keeps the bookkeeping pure as well; only
// Tun::read() and Tun::write() make syscalls.

namespace {
// With offload, reads are packed one after another into the batch, each with
// room for the largest super-packet the kernel hands over (gso_max_size, 64
// KiB unless an administrator raised it) after the vnet header.
constexpr size_t kVnetReadMax = offload::kVnetHdrLen + 65536;
constexpr size_t kVnetRxBytes = 4 * kVnetReadMax;
// Segments split from super-packets. One 64 KiB super-packet of small
// segments can need more, or more than kMaxSplitSegments: it is then handed
// over in chunks, one batch each.
constexpr size_t kSegBytes = 2 * 65536;
constexpr size_t kMaxSplitSegments = 1024;
static_assert(kTxHeadroom >= offload::kVnetHdrLen, "a plain packet's vnet header goes in its headroom");
}  // namespace

TunBatch::TunBatch(const Tun& tun, uint32_t mtu, size_t tx_capacity)
    : TunBatch(tun.offload() ? Framing::vnet : Framing::plain, mtu, tx_capacity) {}

TunBatch::TunBatch(Framing framing, uint32_t mtu, size_t tx_capacity)
    : framing_(framing), grouper_(framing == Framing::vnet ? tx_capacity : 0), gso_(framing == Framing::vnet) {
    if (framing == Framing::vnet) {
        rx_buf_.assign(kVnetRxBytes, 0);
        seg_buf_.assign(kSegBytes, 0);
        rx_.resize(kMaxReads + kMaxSplitSegments);
    } else {
        rx_stride_ = (std::max<size_t>(mtu, 1) + 63) & ~size_t{63};
        rx_buf_.assign(rx_stride_ * kMaxReads, 0);
        rx_.resize(kMaxReads);
    }
    tx_.reserve(tx_capacity);
    tx_order_.resize(tx_capacity);
    tx_views_.resize(tx_capacity);
}

// --- receive -----------------------------------------------------------------

bool TunBatch::rx_more() const {
    const bool splitting = pending_next_ < pending_.count;
    return !rx_drained_ && (splitting || rx_reads_ < rx_max_reads_);
}

void TunBatch::rx_begin(size_t max_reads) {
    rx_count_ = 0;
    seg_used_ = 0;
    rx_reads_ = 0;
    rx_max_reads_ = max_reads;
    rx_drained_ = false;
    split_pending();  // the super-packet being split stays where it was read meanwhile
    if (pending_next_ >= pending_.count) rx_used_ = 0;
}

uint8_t* TunBatch::rx_slot(size_t& cap) {
    if (rx_drained_ || rx_reads_ >= rx_max_reads_ || rx_count_ >= rx_.size()) return nullptr;
    if (framing_ == Framing::plain) {
        cap = rx_stride_;
        return rx_buf_.data() + rx_count_ * rx_stride_;
    }
    if (pending_next_ < pending_.count || rx_buf_.size() - rx_used_ < kVnetReadMax) return nullptr;
    cap = kVnetReadMax;
    return rx_buf_.data() + rx_used_;
}

void TunBatch::rx_commit(size_t n) {
    size_t cap = 0;
    uint8_t* read = rx_slot(cap);
    if (read == nullptr) return;  // no slot was given out: nothing was read into one
    ++rx_reads_;
    n = std::min(n, cap);
    if (framing_ == Framing::plain) {
        rx_add(ByteView(read, n), RxChecksum::verify);  // the Stack checks every byte
        return;
    }
    rx_used_ += n;
    rx_accept(read, n);
}

void TunBatch::rx_stop(long err) {
    if (err != EAGAIN && err != EINTR) ++stats_.read_errors;
    rx_drained_ = true;
}

// One read from an offload TUN. What the kernel vouched for reaches the Stack
// without a TCP checksum computed or verified (faketcp.h, RxChecksum); a read
// without offload metadata is verified in full there.
void TunBatch::rx_accept(uint8_t* read, size_t n) {
    const offload::RxPacket rx = offload::parse_rx(read, n, offload::TcpChecksumFill::leave);
    switch (rx.kind) {
        case offload::RxPacket::Kind::drop:
            ++stats_.rx_drops[static_cast<size_t>(rx.drop)];
            return;
        case offload::RxPacket::Kind::plain:
            if (rx.checksummed) ++stats_.partial_csum_reads;
            if (rx.checksum == RxChecksum::kernel_verified) ++stats_.csum_trusted;
            rx_add(rx.packet, rx.checksum);
            return;
        case offload::RxPacket::Kind::segments:
            ++stats_.gro_reads;
            stats_.gro_segments += rx.count;
            stats_.csum_trusted += rx.count;
            pending_ = rx;
            pending_next_ = 0;
            split_pending();
            return;
    }
}

// As many segments of the pending super-packet as the batch holds.
void TunBatch::split_pending() {
    while (pending_next_ < pending_.count && rx_count_ < rx_.size()) {
        const size_t size = pending_.segment_size(pending_next_);
        if (seg_buf_.size() - seg_used_ < size) return;
        uint8_t* out = seg_buf_.data() + seg_used_;
        offload::rx_segment(pending_, pending_next_, out, offload::TcpChecksumFill::leave);
        seg_used_ += size;
        rx_add(ByteView(out, size), pending_.checksum);
        ++pending_next_;
    }
}

size_t Tun::read(size_t queue, TunBatch& batch, size_t max_reads) const {
    batch.rx_begin(max_reads);
    if (queue >= fds_.size() || (batch.framing() == TunBatch::Framing::vnet) != offload()) {
        batch.rx_stop(EINVAL);  // a batch made for another Tun, or no such queue
        return 0;
    }
    size_t cap = 0;
    while (uint8_t* slot = batch.rx_slot(cap)) {
        const long n = read(queue, slot, cap);
        if (n < 0) {
            batch.rx_stop(-n);
            break;
        }
        batch.rx_commit(static_cast<size_t>(n));
    }
    return batch.rx_reads();
}

// --- transmit ----------------------------------------------------------------

void TunBatch::add_tx(uint8_t* data, size_t size, TxChecksum checksum) {
    tx_.push_back(TxEntry{data, size, checksum});  // allocates only past the capacity
}

void TunBatch::tx_clear() {
    tx_.clear();
    tx_pos_ = tx_run_ = 0;
}

// The send order: each flow's packets next to each other, so that gso_run()
// finds their runs (FlowGrouper), when there is anything to coalesce.
void TunBatch::tx_plan() {
    const size_t count = tx_.size();
    if (tx_order_.size() < count) {  // only if the queue outgrew its capacity
        tx_order_.resize(count);
        tx_views_.resize(count);
    }
    for (size_t k = 0; k < count; ++k) tx_views_[k] = ByteView(tx_[k].data, tx_[k].size);
    if (gso_ && count > 2) {
        grouper_.group(tx_views_.data(), count, tx_order_.data());
        for (size_t k = 0; k < count; ++k) tx_views_[k] = ByteView(tx_[tx_order_[k]].data, tx_[tx_order_[k]].size);
    } else {
        for (size_t k = 0; k < count; ++k) tx_order_[k] = static_cast<uint32_t>(k);
    }
    tx_pos_ = tx_run_ = 0;
}

// A run of equal-size segments goes out as one super-packet: a gather write
// of the GSO header and the payloads where they lie, so nothing is copied.
TunBatch::Write TunBatch::tx_next() {
    if (tx_pos_ >= tx_.size()) return Write{};
    const ByteView* views = &tx_views_[tx_pos_];
    const size_t left = tx_.size() - tx_pos_;
    const size_t run = gso_ ? offload::gso_run(views, left) : 1;
    const size_t hl = run >= 2 ? offload::gso_header(views, run, gso_hdr_.data()) : 0;
    if (hl == 0) return tx_plain(tx_pos_);
    const size_t skip = hl - offload::kVnetHdrLen;  // IP + TCP header, the same in every packet
    parts_[0] = ByteView(gso_hdr_.data(), hl);
    for (size_t k = 0; k < run; ++k) parts_[k + 1] = ByteView(views[k].data + skip, views[k].size - skip);
    tx_run_ = run;
    tx_super_ = true;
    return Write{parts_.data(), run + 1};
}

// Packet k of the send order alone, behind a vnet header written into its
// headroom when the Tun has offload.
TunBatch::Write TunBatch::tx_plain(size_t k) {
    const TxEntry& e = tx_[tx_order_[k]];
    tx_run_ = 1;
    tx_super_ = false;
    if (framing_ == Framing::plain) {
        parts_[0] = ByteView(e.data, e.size);
    } else {
        uint8_t* hdr = e.data - offload::kVnetHdrLen;
        offload::plain_header(ByteView(e.data, e.size), e.checksum, hdr);
        parts_[0] = ByteView(hdr, offload::kVnetHdrLen + e.size);
    }
    return Write{parts_.data(), 1};
}

void TunBatch::tx_done(long result) {
    if (tx_super_ && result == -EINVAL) {
        // This kernel refuses our super-packets: the run again one by one, and
        // every packet from now on.
        ++stats_.gso_rejected;
        gso_ = false;
    } else if (result < 0) {
        stats_.write_errors += tx_run_;  // ENOBUFS/EAGAIN: lost, as with UDP
        tx_pos_ += tx_run_;
    } else {
        if (tx_super_) {
            ++stats_.gso_writes;
            stats_.gso_segments += tx_run_;
        }
        tx_pos_ += tx_run_;
    }
    tx_run_ = 0;
    tx_super_ = false;
}

void Tun::write(size_t queue, TunBatch& batch) const {
    // A batch made for another Tun: every write fails, as on a queue it lacks.
    const bool fits = (batch.framing() == TunBatch::Framing::vnet) == offload();
    batch.tx_plan();
    for (TunBatch::Write w = batch.tx_next(); w.count != 0; w = batch.tx_next()) {
        long r = -EINVAL;
        if (fits) r = w.count == 1 ? write(queue, w.parts[0].data, w.parts[0].size) : writev(queue, w.parts, w.count);
        batch.tx_done(r);
    }
    batch.tx_clear();
}


// ---------------------------------------------------------------------------
// The host kernel's window scale (StackConfig::linux_window_scale)
// ---------------------------------------------------------------------------

namespace {
// The last number on the first line of a /proc file, or 0.
uint64_t last_number_in(const char* path) {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[128];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    uint64_t last = 0, cur = 0;
    bool in_number = false;
    for (ssize_t i = 0; i < n && buf[i] != '\n'; ++i) {
        if (buf[i] >= '0' && buf[i] <= '9') {
            cur = in_number ? cur * 10 + static_cast<uint64_t>(buf[i] - '0') : static_cast<uint64_t>(buf[i] - '0');
            in_number = true;
            if (cur > (uint64_t{1} << 40)) return 0;  // nonsense
        } else if (in_number) {
            last = cur;
            in_number = false;
        }
    }
    return in_number ? cur : last;
}
}  // namespace

// tcp_select_initial_window: space = max(tcp_rmem[2], rmem_max), shift =
// ilog2(space) - 15 clamped to 0..14.
uint8_t linux_window_scale_from_sysctls() {
    const uint64_t space = std::max(last_number_in("/proc/sys/net/ipv4/tcp_rmem"),
                                    last_number_in("/proc/sys/net/core/rmem_max"));
    if (space == 0) return 7;
    int log2 = 0;
    while ((space >> (log2 + 1)) != 0) ++log2;
    return static_cast<uint8_t>(std::min(std::max(log2 - 15, 0), 14));
}

}  // namespace faketcp
