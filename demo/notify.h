// demo/notify.h — systemd's readiness protocol (Type=notify) without libsystemd:
// one datagram "READY=1" / "STOPPING=1" to the AF_UNIX socket in $NOTIFY_SOCKET.
#pragma once

namespace demo {

// Sends `state` to $NOTIFY_SOCKET; does nothing when it is unset. A leading
// '@' names an abstract socket. Failures are logged at debug and ignored:
// systemd then sees no readiness and times out, which is its own report.
void notify_systemd(const char* state);

}  // namespace demo
