"""Options of webhooks: where they may go, how they are signed and retried."""

from __future__ import annotations

from oslo_config import cfg

OPTS = [
    cfg.ListOpt(
        "webhook-allow",
        default=[],
        help="Hosts that a Webhook-URL may name: names matched label by label "
        "(hooks.example.org, *.example.org for one label under it), addresses "
        "or networks (10.0.0.0/24), each with a port (:8443, or :* for any); "
        "without one, ports 80 and 443 only. A name is looked up at every "
        "delivery, and loopback, private, link-local and multicast addresses "
        "are refused unless an entry names the address or its network. None "
        "(the default): webhooks are refused with a 422, so that the server "
        "cannot be made to call any address.",
    ),
    cfg.StrOpt(
        "webhook-secret",
        default="",
        secret=True,
        help="The key that signs webhook deliveries as the Standard Webhooks "
        "specification says (webhook-id, webhook-timestamp, webhook-signature "
        "headers): whsec_ and the key in base64. Empty: deliveries go unsigned.",
    ),
    cfg.IntOpt(
        "webhook-attempts",
        default=8,
        min=1,
        help="Most attempts to deliver one webhook; between them the wait "
        "doubles from one second (at most ten minutes). Pending deliveries "
        "survive a restart.",
    ),
]
