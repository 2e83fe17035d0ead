"""Options of security: who may call the server, from which sites and names."""

from __future__ import annotations

from oslo_config import cfg

OPTS = [
    cfg.StrOpt(
        "api-keys-file",
        default="",
        help="Turns authentication on with API keys: a file with one key per "
        "line, 'KEY ROLES [NAME]', where KEY is the key itself or sha256:<hex "
        "digest of it> (deepaas-api-key makes both), ROLES a comma-separated "
        "list of predict, train and admin, and NAME who owns what the key "
        "starts. Clients send the key as 'Authorization: Bearer KEY' or "
        "'X-API-Key: KEY'. Read again on SIGHUP.",
    ),
    cfg.StrOpt(
        "oidc-issuer",
        default="",
        help="Turns authentication on with OpenID Connect access tokens (JWT) "
        "of this issuer (for example https://aai.egi.eu/auth/realms/egi), sent "
        "as 'Authorization: Bearer TOKEN'. Its signing keys come from "
        "--oidc-jwks or else from the issuer's discovery document.",
    ),
    cfg.StrOpt(
        "oidc-audience",
        default="",
        help="With --oidc-issuer (and then required): the audience (aud) a "
        "token must name, so that a token the issuer made for another service "
        "is not accepted here. '*' accepts any audience (said at start-up).",
    ),
    cfg.StrOpt(
        "oidc-jwks",
        default="",
        help="With --oidc-issuer: the issuer's keys (a JWKS), as an https URL or "
        "a file. Kept for an hour and fetched again at once for a token signed "
        "with an unknown key. Empty: the jwks_uri of the issuer's "
        "/.well-known/openid-configuration.",
    ),
    cfg.StrOpt(
        "oidc-roles-claim",
        default="groups",
        help="With --oidc-issuer: the token claim that lists the user's roles or "
        "groups, a dotted path for nested claims (realm_access.roles, "
        "eduperson_entitlement).",
    ),
    cfg.MultiStrOpt(
        "oidc-role",
        default=[],
        help="With --oidc-issuer: ROLE=VALUE gives role ROLE (predict, train or "
        "admin) to users whose roles claim holds VALUE, for example "
        "admin=urn:mace:egi.eu:group:vo.example.org:role=manager#aai.egi.eu. "
        "Repeat for several; at least one is required with --oidc-issuer. "
        "Roles come from these alone: a claim value that happens to be called "
        "admin gives no role.",
    ),
    cfg.StrOpt(
        "oidc-user-claim",
        default="sub",
        help="With --oidc-issuer: the claim naming the user, who owns the "
        "trainings they start.",
    ),
    cfg.BoolOpt(
        "public-docs",
        default=False,
        help="With authentication on: serve the spec (/swagger.json, "
        "/openapi.json) and Swagger UI without credentials. Swagger UI's "
        "Authorize button then takes a key or token for the calls it makes.",
    ),
    cfg.BoolOpt(
        "public-metrics",
        default=False,
        help="With authentication on: serve /metrics without credentials (for a "
        "Prometheus on a private network); otherwise it needs the admin role.",
    ),
    cfg.ListOpt(
        "allowed-hosts",
        default=[],
        help="Host names (the Host header) this server answers to, besides "
        "its loopback names and addresses: exact names, '*.example.org' for "
        "one label under it, a ':port' to require that port, or '*' for any. "
        "A server listening on a loopback address refuses (421) requests for "
        "any other name, so that a web page whose name was made to resolve to "
        "127.0.0.1 (DNS rebinding) cannot drive it; on other addresses, names "
        "are checked only when this option is set.",
    ),
    cfg.MultiStrOpt(
        "cors-origin",
        default=[],
        help="An origin (for example https://app.example.org) whose web pages "
        "may call this server from the browser: its requests get CORS headers "
        "and their preflights are answered. Repeat for several. Pages of any "
        "other site may not POST or DELETE here (checked with Sec-Fetch-Site "
        "and Origin); clients that are not browsers are not affected.",
    ),
]
