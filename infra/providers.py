"""SMTP provider presets (`mailer:smtpProvider`): host, port, scheme and authentication per provider.

A preset fills what the provider fixes and checks what it requires, so a wrong guess fails the preview
instead of the first email. With a preset, `mailer:smtpConnectionUri` may be left unset: the URI is built
from the preset, `mailer:smtpUser` and (for XOAUTH2) the OAuth2 options. A URI that is set anyway must
agree with the preset; every disagreement is a one-line error naming the key (`mailer:<key>`).

Facts, from each provider's own documentation (December 2026):
- Gmail / Google Workspace: smtp.gmail.com, 465 implicit TLS or 587 STARTTLS; the user is the full
  address. A password means an app password (2-Step Verification on; "less secure apps" is gone), or
  XOAUTH2 with scope https://mail.google.com/ and the token endpoint https://oauth2.googleapis.com/token.
  Workspace may also relay through smtp-relay.gmail.com (same ports, SMTP AUTH with a Workspace account).
- Microsoft 365: smtp.office365.com, 587 STARTTLS only; the user is the mailbox. Exchange Online
  disables basic AUTH for SMTP by default from the end of December 2026, so XOAUTH2 (scope
  https://outlook.office.com/SMTP.Send) is the default, with the token endpoint
  https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token. PLAIN/LOGIN remain selectable.
- SendGrid: smtp.sendgrid.net, 465 implicit TLS, 587 or 2525 STARTTLS; the user is literally `apikey`
  and the password an API key with Mail permission.
- Mailgun: smtp.mailgun.org (US) or smtp.eu.mailgun.org (EU), 465 implicit TLS, 587 or 2525 STARTTLS;
  the user is the domain's SMTP credential (postmaster@<domain> or another login@<domain>).
- Amazon SES: email-smtp.<region>.amazonaws.com, 465 or 2465 implicit TLS, 587 or 2587 STARTTLS; the
  user is the SES SMTP user name (per region; not the IAM access key pair's secret).
- Aliyun Direct Mail: smtpdm.aliyun.com (China, Hangzhou), smtpdm-ap-southeast-1.aliyuncs.com
  (Singapore; legacy smtpdm-ap-southeast-1.aliyun.com), smtpdm-us-east-1.aliyuncs.com (US, Virginia),
  smtpdm-eu-central-1.aliyuncs.com (Germany, Frankfurt); 465 implicit TLS, or 80 with STARTTLS. The
  user must be the sender address, with the SMTP password set for it in the console.
Port 25 is never used: Google Cloud blocks outbound traffic to it.

Pure Python (no Pulumi), so operator tools can resolve a stack the way the program does.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

NAMESPACE = "mailer"
CUSTOM = "custom"
PLAIN, LOGIN, XOAUTH2 = "PLAIN", "LOGIN", "XOAUTH2"
AUTH_METHODS = (PLAIN, LOGIN, XOAUTH2)
PASSWORD_METHODS = (PLAIN, LOGIN)
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
MICROSOFT_TOKEN_URL_EXAMPLE = "https://login.microsoftonline.com/<tenant id or domain>/oauth2/v2.0/token"
_MICROSOFT_TOKEN_URL = re.compile(r"^https://login\.microsoftonline\.com/[A-Za-z0-9][A-Za-z0-9.-]*/oauth2/v2\.0/token$")
_AWS_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d{1,2}$")
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The URI options this module writes (the function's SMTP_CONNECTION_URI options of the same names).
AUTH_OPTION, TOKEN_URL_OPTION, CLIENT_ID_OPTION = "authMethod", "oauth2TokenUrl", "oauth2ClientId"
SENDGRID_HOST = "smtp.sendgrid.net"
SENDGRID_USER = "apikey"


def key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


class ProviderError(ValueError):
    """A setting that contradicts the preset or misses what it needs; str(e) is one line naming the key."""


@dataclass(frozen=True)
class Preset:
    """What one provider fixes and requires."""

    name: str
    title: str
    # Accepted (scheme, port) pairs; the first is what a built URI uses.
    endpoints: tuple[tuple[str, int], ...]
    auth_methods: tuple[str, ...]
    # None: PLAIN or LOGIN, whichever the server offers (the function's own choice).
    default_auth: Optional[str]
    user_hint: str
    # Hosts per region; the first is the one a built URI uses. The key None holds a preset without regions.
    hosts: dict[Optional[str], tuple[str, ...]]
    region_required: bool = False
    default_region: Optional[str] = None
    # Host for a region not listed in hosts (Amazon SES: every region follows one pattern).
    host_pattern: Optional[Callable[[str], Optional[str]]] = None
    region_hint: str = ""
    fixed_user: Optional[str] = None
    # Returns why a user is refused, or None.
    user_check: Optional[Callable[[str], Optional[str]]] = None
    token_url: Optional[str] = None
    token_url_pattern: Optional[re.Pattern[str]] = None
    token_url_example: str = ""

    def hosts_for(self, region: Optional[str]) -> tuple[str, ...]:
        if region in self.hosts:
            return self.hosts[region]
        if region is not None and self.host_pattern is not None:
            host = self.host_pattern(region)
            return (host,) if host else ()
        return ()

    def endpoint_text(self) -> str:
        return ", ".join(f"{scheme}:// on {port}" for scheme, port in self.endpoints)


def _address(preset_title: str) -> Callable[[str], Optional[str]]:
    def check(user: str) -> Optional[str]:
        return None if _ADDRESS.match(user) else f"is not an email address; {preset_title} logs in with the full address"
    return check


def _gmail_user(user: str) -> Optional[str]:
    if not _ADDRESS.match(user):
        return "is not an email address; Gmail logs in with the full address, e.g. you@gmail.com"
    if user.rsplit("@", 1)[1].lower() not in ("gmail.com", "googlemail.com"):
        return "is not a @gmail.com address; for a Google Workspace domain set mailer:smtpProvider google-workspace"
    return None


def _workspace_user(user: str) -> Optional[str]:
    if not _ADDRESS.match(user):
        return "is not an email address; Google Workspace logs in with the full address, e.g. you@your-domain.example"
    if user.rsplit("@", 1)[1].lower() in ("gmail.com", "googlemail.com"):
        return "is a @gmail.com address; for a personal Gmail account set mailer:smtpProvider gmail"
    return None


def _ses_host(region: str) -> Optional[str]:
    return f"email-smtp.{region}.amazonaws.com" if _AWS_REGION.match(region) else None


_GOOGLE_COMMON = dict(
    endpoints=(("smtps", 465), ("smtp", 587)),
    auth_methods=(PLAIN, LOGIN, XOAUTH2),
    default_auth=None,
    token_url=GOOGLE_TOKEN_URL,
)

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="gmail", title="Gmail", hosts={None: ("smtp.gmail.com",)}, user_check=_gmail_user,
            user_hint="your Gmail address, e.g. you@gmail.com", **_GOOGLE_COMMON,  # type: ignore[arg-type]
        ),
        Preset(
            name="google-workspace", title="Google Workspace", hosts={None: ("smtp.gmail.com", "smtp-relay.gmail.com")},
            user_check=_workspace_user, user_hint="the Workspace mailbox, e.g. noreply@your-domain.example",
            **_GOOGLE_COMMON,  # type: ignore[arg-type]
        ),
        Preset(
            name="microsoft365", title="Microsoft 365", hosts={None: ("smtp.office365.com",)},
            endpoints=(("smtp", 587),), auth_methods=(XOAUTH2, PLAIN, LOGIN), default_auth=XOAUTH2,
            user_check=_address("Microsoft 365"), user_hint="the mailbox, e.g. noreply@your-domain.example",
            token_url_pattern=_MICROSOFT_TOKEN_URL, token_url_example=MICROSOFT_TOKEN_URL_EXAMPLE,
        ),
        Preset(
            name="sendgrid", title="SendGrid", hosts={None: (SENDGRID_HOST,)},
            endpoints=(("smtps", 465), ("smtp", 587), ("smtp", 2525)), auth_methods=PASSWORD_METHODS, default_auth=None,
            fixed_user=SENDGRID_USER, user_hint="the literal word apikey (the API key is the password)",
        ),
        Preset(
            name="mailgun", title="Mailgun", hosts={"us": ("smtp.mailgun.org",), "eu": ("smtp.eu.mailgun.org",)},
            default_region="us", region_hint="us (default) or eu, the region of your Mailgun domain",
            endpoints=(("smtps", 465), ("smtp", 587), ("smtp", 2525)), auth_methods=PASSWORD_METHODS, default_auth=None,
            user_check=_address("Mailgun"), user_hint="the domain's SMTP login, e.g. postmaster@mg.your-domain.example",
        ),
        Preset(
            name="amazon-ses", title="Amazon SES", hosts={}, host_pattern=_ses_host, region_required=True,
            region_hint="the AWS region of your SES identities, e.g. us-east-1 or eu-west-1",
            endpoints=(("smtps", 465), ("smtps", 2465), ("smtp", 587), ("smtp", 2587)),
            auth_methods=PASSWORD_METHODS, default_auth=None,
            user_hint="the SES SMTP user name created for that region (SES console, SMTP settings)",
        ),
        Preset(
            name="aliyun-directmail", title="Aliyun Direct Mail", region_required=True,
            hosts={
                "cn-hangzhou": ("smtpdm.aliyun.com",),
                "ap-southeast-1": ("smtpdm-ap-southeast-1.aliyuncs.com", "smtpdm-ap-southeast-1.aliyun.com"),
                "us-east-1": ("smtpdm-us-east-1.aliyuncs.com",),
                "eu-central-1": ("smtpdm-eu-central-1.aliyuncs.com",),
            },
            region_hint="the Direct Mail console's region: cn-hangzhou, ap-southeast-1, us-east-1 or eu-central-1",
            endpoints=(("smtps", 465), ("smtp", 80)), auth_methods=PASSWORD_METHODS, default_auth=None,
            user_check=_address("Aliyun Direct Mail"),
            user_hint="the sender address you set an SMTP password for, e.g. noreply@mail.your-domain.example",
        ),
    )
}
PROVIDERS = (*PRESETS, CUSTOM)


@dataclass(frozen=True)
class Resolved:
    """The effective SMTP settings of a stack."""

    uri: str
    user: Optional[str]
    auth_method: Optional[str]  # None: PLAIN or LOGIN, whichever the server offers
    oauth2_token_url: Optional[str]
    oauth2_client_id: Optional[str]

    @property
    def uses_xoauth2(self) -> bool:
        return self.auth_method == XOAUTH2


def _loopback(host: str) -> bool:
    # As the function's smtp_uri.is_loopback_host: localhost (also written with a final dot or as a
    # *.localhost name), 127.0.0.0/8 and ::1.
    lowered = host.lower()
    if lowered in ("localhost", "localhost.") or lowered.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token_url(value: str) -> str:
    """https, or http for a loopback host only (a local token endpoint); ValueError otherwise. Refuses
    what the function's URI parser refuses in option oauth2TokenUrl (credentials, a bad port), so such a
    value stops the preview instead of failing every email."""
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    try:
        parts.port  # (raises ValueError for a port that is not a number from 0 to 65535)
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@); the client secret is mailer:oauth2ClientSecret")
    if scheme == "https" and parts.hostname:
        return value
    if scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return value
    raise ValueError("must be an https:// URL (http:// only for a loopback host such as 127.0.0.1)")


def _options(uri: Optional[str]) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(uri).query, keep_blank_values=True)) if uri else {}


def _uri_user(uri: str) -> Optional[str]:
    username = urlsplit(uri).username
    return unquote(username) if username else None


def _with(uri: str, user: Optional[str], options: list[tuple[str, str]]) -> str:
    """uri with user as its user name (when it has none) and options appended to its query."""
    parts = urlsplit(uri)
    netloc = parts.netloc
    if user is not None and "@" not in netloc:
        netloc = f"{quote(user, safe='')}@{netloc}"
    query = parts.query
    if options:
        extra = urlencode(options, quote_via=quote, safe="")
        query = f"{query}&{extra}" if query else extra
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _agree(name: str, from_key: Optional[str], from_uri: Optional[str], uri_part: str, *, fold: bool = False) -> Optional[str]:
    """The value of a setting that may come from its own key or from a URI option; an error if both
    are set and differ (neither value is echoed: a URI option may be all the operator wants hidden)."""
    if from_key is not None and from_uri is not None:
        same = from_key.upper() == from_uri.upper() if fold else from_key == from_uri
        if not same:
            raise ProviderError(
                f"{key(name)} and {uri_part} {key('smtpConnectionUri')} differ; "
                f"change one of them, or run `pulumi config rm {key(name)}`"
            )
    return from_key if from_key is not None else from_uri


def resolve(
    provider: str,
    *,
    region: Optional[str] = None,
    uri: Optional[str] = None,
    user: Optional[str] = None,
    auth_method: Optional[str] = None,
    token_url: Optional[str] = None,
    client_id: Optional[str] = None,
) -> Resolved:
    """The effective SMTP settings from a stack's keys; ProviderError naming the key otherwise.

    `uri` is `mailer:smtpConnectionUri` as set (None when unset), already checked for scheme, host and
    port by the config model; `auth_method` is upper case."""
    preset = PRESETS.get(provider)
    options = _options(uri)
    uri_auth = options.get(AUTH_OPTION)
    uri_auth = uri_auth.upper() if uri_auth else None
    method = _agree("smtpAuthMethod", auth_method, uri_auth, f"the {AUTH_OPTION} option of", fold=True)
    token = _agree("oauth2TokenUrl", token_url, options.get(TOKEN_URL_OPTION), f"the {TOKEN_URL_OPTION} option of")
    client = _agree("oauth2ClientId", client_id, options.get(CLIENT_ID_OPTION), f"the {CLIENT_ID_OPTION} option of")
    login = _agree("smtpUser", user, _uri_user(uri) if uri else None, "the user of")

    if preset is None:  # custom
        if region is not None:
            raise ProviderError(
                f"{key('smtpProviderRegion')} is set but {key('smtpProvider')} is custom, which has no regions; "
                f"run `pulumi config rm {key('smtpProviderRegion')}`"
            )
        if uri is None:
            raise ProviderError(
                f"{key('smtpConnectionUri')} is not set; run `pulumi config set {key('smtpConnectionUri')} <value>`, "
                f"or set {key('smtpProvider')} to a preset ({', '.join(PRESETS)}) and {key('smtpUser')}"
            )
        host = (urlsplit(uri).hostname or "").lower()
        if host == SENDGRID_HOST and login is not None and login != SENDGRID_USER:
            raise ProviderError(_sendgrid_user_error(user is not None))
    else:
        region = _region(preset, region)
        hosts = preset.hosts_for(region)
        if not hosts:
            raise ProviderError(f"{key('smtpProviderRegion')} is {region!r}, which {preset.title} does not have; use {preset.region_hint}")
        if preset.fixed_user is not None:
            if login is not None and login != preset.fixed_user:
                raise ProviderError(_sendgrid_user_error(user is not None))
            login = preset.fixed_user
        if login is None:
            raise ProviderError(
                f"{key('smtpUser')} is not set; {preset.title} needs {preset.user_hint}: "
                f"run `pulumi config set {key('smtpUser')} <user>`"
            )
        if preset.user_check is not None and (why := preset.user_check(login)):
            where = key("smtpUser") if user is not None else f"the user of {key('smtpConnectionUri')}"
            raise ProviderError(f"{where} {why}")
        if uri is not None:
            _check_endpoint(preset, uri, hosts, region)
        if method is not None and method not in preset.auth_methods:
            where = key("smtpAuthMethod") if auth_method is not None else f"the authMethod option of {key('smtpConnectionUri')}"
            raise ProviderError(f"{where} is {method}, which {preset.title} does not take; use {' or '.join(preset.auth_methods)}")
        if method is None:
            method = preset.default_auth
        if method == XOAUTH2:
            token = _preset_token_url(preset, token, token_url is not None)

    if method == XOAUTH2:
        _check_xoauth2(token, client, login)
    else:
        for name, value in (("oauth2TokenUrl", token), ("oauth2ClientId", client)):
            if value is not None:
                raise ProviderError(
                    f"{key(name)} is set but the stack does not use XOAUTH2; run `pulumi config rm {key(name)}`, "
                    f"or `pulumi config set {key('smtpAuthMethod')} XOAUTH2`"
                )

    # The URI the function gets: the one set, or one built from the preset; plus what it lacks.
    if uri is None:
        assert preset is not None
        scheme, port = preset.endpoints[0]
        uri = f"{scheme}://{preset.hosts_for(region)[0]}:{port}"
    wanted: list[tuple[str, str]] = []
    if method is not None and uri_auth is None and (auth_method is not None or method == XOAUTH2):
        wanted.append((AUTH_OPTION, method))
    if method == XOAUTH2:
        if TOKEN_URL_OPTION not in options and token is not None:
            wanted.append((TOKEN_URL_OPTION, token))
        if CLIENT_ID_OPTION not in options and client is not None:
            wanted.append((CLIENT_ID_OPTION, client))
    effective = _with(uri, login if _uri_user(uri) is None else None, wanted)
    return Resolved(uri=effective, user=login, auth_method=method, oauth2_token_url=token if method == XOAUTH2 else None,
                    oauth2_client_id=client if method == XOAUTH2 else None)


def _sendgrid_user_error(from_key: bool) -> str:
    where = key("smtpUser") if from_key else f"the user of {key('smtpConnectionUri')}"
    return (
        f"{where} must be the literal word {SENDGRID_USER} for SendGrid (the API key is the password, "
        f"in mailer:smtpPassword); run `pulumi config set {key('smtpUser')} {SENDGRID_USER}` or leave it unset"
    )


def _region(preset: Preset, region: Optional[str]) -> Optional[str]:
    has_regions = preset.region_required or preset.default_region is not None
    if not has_regions:
        if region is not None:
            raise ProviderError(
                f"{key('smtpProviderRegion')} is set but {preset.title} has no regions; "
                f"run `pulumi config rm {key('smtpProviderRegion')}`"
            )
        return None
    if region is None:
        if preset.region_required:
            raise ProviderError(
                f"{key('smtpProviderRegion')} is not set; {preset.title} needs {preset.region_hint}: "
                f"run `pulumi config set {key('smtpProviderRegion')} <region>`"
            )
        return preset.default_region
    return region


def _check_endpoint(preset: Preset, uri: str, hosts: tuple[str, ...], region: Optional[str]) -> None:
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if host not in hosts:
        where = f" in region {region}" if region else ""
        raise ProviderError(
            f"{key('smtpConnectionUri')} names a host other than {preset.title}'s{where} ({' or '.join(hosts)}); "
            f"fix the host, or run `pulumi config rm {key('smtpConnectionUri')}` to let the preset build the URI"
        )
    endpoint = (parts.scheme.lower(), parts.port)
    if endpoint not in preset.endpoints:
        raise ProviderError(
            f"{key('smtpConnectionUri')} uses {endpoint[0]}:// on port {endpoint[1]}, which {preset.title} does not "
            f"serve; use {preset.endpoint_text()}"
        )


def _preset_token_url(preset: Preset, token: Optional[str], from_key: bool) -> Optional[str]:
    where = key("oauth2TokenUrl") if from_key else f"the oauth2TokenUrl option of {key('smtpConnectionUri')}"
    if preset.token_url is not None:
        if token is not None and token != preset.token_url:
            raise ProviderError(
                f"{where} is not {preset.title}'s token endpoint {preset.token_url}; "
                f"run `pulumi config rm {key('oauth2TokenUrl')}` (the preset sets it)"
            )
        return preset.token_url
    if preset.token_url_pattern is not None:
        if token is None:
            raise ProviderError(
                f"{key('oauth2TokenUrl')} is not set; {preset.title} XOAUTH2 needs your tenant's token endpoint: "
                f"run `pulumi config set {key('oauth2TokenUrl')} {preset.token_url_example}`"
            )
        if not preset.token_url_pattern.match(token):
            raise ProviderError(f"{where} is not a {preset.title} token endpoint; use {preset.token_url_example}")
    return token


def _check_xoauth2(token: Optional[str], client: Optional[str], login: Optional[str]) -> None:
    if token is None:
        raise ProviderError(
            f"{key('oauth2TokenUrl')} is not set; XOAUTH2 needs the provider's OAuth2 token endpoint: "
            f"run `pulumi config set {key('oauth2TokenUrl')} https://...`"
        )
    try:
        check_token_url(token)
    except ValueError as error:
        raise ProviderError(f"{key('oauth2TokenUrl')} {error}") from None
    if client is None:
        raise ProviderError(
            f"{key('oauth2ClientId')} is not set; XOAUTH2 needs the OAuth2 client id: "
            f"run `pulumi config set {key('oauth2ClientId')} <client id>`"
        )
    if login is None:
        raise ProviderError(
            f"{key('smtpUser')} is not set; XOAUTH2 logs in as the mailbox: run `pulumi config set {key('smtpUser')} <address>`"
        )
