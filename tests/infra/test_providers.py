"""Provider presets (mailer:smtpProvider, infra/providers.py) and the OAuth2 / runtime-secret infrastructure
(issue 11): what each preset builds, every conflict refused at preview naming its key, the secrets each
authentication method needs, and what EmailTrigger declares for them (secrets, IAM, environment)."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

import pulumi
import pytest

from infra.config import ConfigError, MailerSettings, StackConfig, load_config
from infra.mailer import EmailTrigger, EmailTriggerArgs
from infra.providers import GOOGLE_TOKEN_URL, PRESETS, PROVIDERS
from infra.source import collect_source
from tests.infra.conftest import REPO_ROOT, TEST_PASSWORD, PulumiHarness, StackRun, is_secret, plain_occurrences, unwrap

BASE = {
    "gcp:project": "acme-mailer-unit",
    "mailer:region": "europe-west3",
    "mailer:firestoreLocation": "europe-west3",
    "mailer:defaultFrom": "noreply@acme.example",
}
MS_TOKEN_URL = "https://login.microsoftonline.com/acme.example/oauth2/v2.0/token"
CLIENT_SECRET = "cs-Qz7!client-secret-value"
REFRESH_TOKEN = "rt-1//0gRefreshTokenValue"
XOAUTH2_365 = {
    "mailer:smtpProvider": "microsoft365",
    "mailer:smtpUser": "noreply@acme.example",
    "mailer:oauth2TokenUrl": MS_TOKEN_URL,
    "mailer:oauth2ClientId": "3f1c-client",
}
SECRET_MEMBER = "gcp:secretmanager/secretIamMember:SecretIamMember"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
RUNTIME = "serviceAccount:mailer-runtime@acme-mailer-unit.iam.gserviceaccount.com"


def settings(**overrides: str) -> MailerSettings:
    return MailerSettings.model_validate({**BASE, **overrides})


def options(uri: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(uri).query))


# ------------------------------------------------------------------------------ what presets build

BUILT = [
    # (stack keys, scheme, host, port, user, auth method written into the URI or None)
    ({"mailer:smtpProvider": "gmail", "mailer:smtpUser": "ada@gmail.com"}, "smtps", "smtp.gmail.com", 465, "ada@gmail.com", None),
    ({"mailer:smtpProvider": "google-workspace", "mailer:smtpUser": "noreply@acme.example"},
     "smtps", "smtp.gmail.com", 465, "noreply@acme.example", None),
    (XOAUTH2_365, "smtp", "smtp.office365.com", 587, "noreply@acme.example", "XOAUTH2"),
    ({"mailer:smtpProvider": "sendgrid"}, "smtps", "smtp.sendgrid.net", 465, "apikey", None),
    ({"mailer:smtpProvider": "mailgun", "mailer:smtpUser": "postmaster@mg.acme.example"},
     "smtps", "smtp.mailgun.org", 465, "postmaster@mg.acme.example", None),
    ({"mailer:smtpProvider": "mailgun", "mailer:smtpProviderRegion": "eu", "mailer:smtpUser": "postmaster@mg.acme.example"},
     "smtps", "smtp.eu.mailgun.org", 465, "postmaster@mg.acme.example", None),
    ({"mailer:smtpProvider": "amazon-ses", "mailer:smtpProviderRegion": "eu-west-1", "mailer:smtpUser": "AKIAEXAMPLESMTPUSER"},
     "smtps", "email-smtp.eu-west-1.amazonaws.com", 465, "AKIAEXAMPLESMTPUSER", None),
    ({"mailer:smtpProvider": "aliyun-directmail", "mailer:smtpProviderRegion": "cn-hangzhou", "mailer:smtpUser": "noreply@mail.acme.example"},
     "smtps", "smtpdm.aliyun.com", 465, "noreply@mail.acme.example", None),
    ({"mailer:smtpProvider": "aliyun-directmail", "mailer:smtpProviderRegion": "ap-southeast-1", "mailer:smtpUser": "noreply@mail.acme.example"},
     "smtps", "smtpdm-ap-southeast-1.aliyuncs.com", 465, "noreply@mail.acme.example", None),
    ({"mailer:smtpProvider": "gmail", "mailer:smtpUser": "ada@gmail.com", "mailer:smtpAuthMethod": "login"},
     "smtps", "smtp.gmail.com", 465, "ada@gmail.com", "LOGIN"),
]


@pytest.mark.parametrize(("keys", "scheme", "host", "port", "user", "method"), BUILT,
                         ids=[f"{k['mailer:smtpProvider']}-{k.get('mailer:smtpProviderRegion', '')}-{m}" for k, *_, m in BUILT])
def test_a_preset_builds_the_uri(keys: dict[str, str], scheme: str, host: str, port: int, user: str, method: Optional[str]) -> None:
    uri = settings(**keys).smtp_connection_uri
    assert uri is not None
    parts = urlsplit(uri)
    assert (parts.scheme, parts.hostname, parts.port, unquote(parts.username or "")) == (scheme, host, port, user)
    assert options(uri).get("authMethod") == method
    assert parts.password is None


def test_every_preset_has_a_build_case_and_no_preset_uses_port_25() -> None:
    assert set(PROVIDERS) == {*PRESETS, "custom"}
    assert {keys["mailer:smtpProvider"] for keys, *_ in BUILT} == set(PRESETS)
    for preset in PRESETS.values():
        assert all(port != 25 for _, port in preset.endpoints), preset.name
        # scheme and port paired: implicit TLS on 465/2465, STARTTLS everywhere else
        assert all((scheme == "smtps") == (port in (465, 2465)) for scheme, port in preset.endpoints), preset.name


def test_gmail_with_xoauth2_gets_googles_token_endpoint() -> None:
    loaded = settings(**{"mailer:smtpProvider": "gmail", "mailer:smtpUser": "ada@gmail.com", "mailer:smtpAuthMethod": "XOAUTH2",
                         "mailer:oauth2ClientId": "123.apps.googleusercontent.com"})
    assert options(loaded.smtp_connection_uri or "") == {
        "authMethod": "XOAUTH2", "oauth2TokenUrl": GOOGLE_TOKEN_URL, "oauth2ClientId": "123.apps.googleusercontent.com"
    }
    assert (loaded.uses_xoauth2, loaded.oauth2_token_url, loaded.smtp_user) == (True, GOOGLE_TOKEN_URL, "ada@gmail.com")


def test_microsoft365_defaults_to_xoauth2_with_the_tenant_endpoint() -> None:
    loaded = settings(**XOAUTH2_365)
    assert loaded.uses_xoauth2 and options(loaded.smtp_connection_uri or "") == {
        "authMethod": "XOAUTH2", "oauth2TokenUrl": MS_TOKEN_URL, "oauth2ClientId": "3f1c-client"
    }


def test_microsoft365_may_still_choose_basic_auth() -> None:
    loaded = settings(**{"mailer:smtpProvider": "microsoft365", "mailer:smtpUser": "noreply@acme.example", "mailer:smtpAuthMethod": "PLAIN"})
    assert not loaded.uses_xoauth2 and options(loaded.smtp_connection_uri or "") == {"authMethod": "PLAIN"}


ACCEPTED_URIS = [
    # An explicit URI that agrees with the preset is kept as written (plus what it lacks).
    ("gmail", {"mailer:smtpConnectionUri": "smtp://ada%40gmail.com@smtp.gmail.com:587"}, "smtp://ada%40gmail.com@smtp.gmail.com:587"),
    ("google-workspace", {"mailer:smtpConnectionUri": "smtps://noreply%40acme.example@smtp-relay.gmail.com:465"},
     "smtps://noreply%40acme.example@smtp-relay.gmail.com:465"),
    ("sendgrid", {"mailer:smtpConnectionUri": "smtp://apikey@smtp.sendgrid.net:2525?maxConnections=2"},
     "smtp://apikey@smtp.sendgrid.net:2525?maxConnections=2"),
    # No user in the URI: the preset's (SendGrid) or mailer:smtpUser is written into it.
    ("sendgrid", {"mailer:smtpConnectionUri": "smtp://smtp.sendgrid.net:587"}, "smtp://apikey@smtp.sendgrid.net:587"),
    ("amazon-ses", {"mailer:smtpProviderRegion": "us-east-1", "mailer:smtpUser": "AKIAEXAMPLE",
                    "mailer:smtpConnectionUri": "smtp://email-smtp.us-east-1.amazonaws.com:2587"},
     "smtp://AKIAEXAMPLE@email-smtp.us-east-1.amazonaws.com:2587"),
    ("aliyun-directmail", {"mailer:smtpProviderRegion": "ap-southeast-1",
                           "mailer:smtpConnectionUri": "smtp://noreply%40mail.acme.example@smtpdm-ap-southeast-1.aliyun.com:80"},
     "smtp://noreply%40mail.acme.example@smtpdm-ap-southeast-1.aliyun.com:80"),
    ("custom", {"mailer:smtpConnectionUri": "smtp://relay.acme.test:587", "mailer:smtpUser": "mailer", "mailer:smtpAuthMethod": "LOGIN"},
     "smtp://mailer@relay.acme.test:587?authMethod=LOGIN"),
    ("custom", {"mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587", "mailer:smtpAuthMethod": "XOAUTH2",
                "mailer:oauth2TokenUrl": "http://127.0.0.1:8444/token", "mailer:oauth2ClientId": "local"},
     "smtp://mailer@relay.acme.test:587?authMethod=XOAUTH2&oauth2TokenUrl=http%3A%2F%2F127.0.0.1%3A8444%2Ftoken&oauth2ClientId=local"),
]


@pytest.mark.parametrize(("provider", "keys", "expected"), ACCEPTED_URIS, ids=[f"{p}-{i}" for i, (p, *_) in enumerate(ACCEPTED_URIS)])
def test_an_explicit_uri_that_agrees_is_kept(provider: str, keys: dict[str, str], expected: str) -> None:
    assert settings(**{"mailer:smtpProvider": provider, **keys}).smtp_connection_uri == expected


def test_custom_is_the_default_and_leaves_the_uri_alone() -> None:
    loaded = settings(**{"mailer:smtpConnectionUri": "smtps://mailer@relay.acme.test:465?pool=false"})
    assert (loaded.smtp_provider, loaded.smtp_connection_uri, loaded.smtp_auth_method) == ("custom", "smtps://mailer@relay.acme.test:465?pool=false", None)


# ------------------------------------------------------------------------------- refused at preview

REFUSED = [
    # (stack keys, key the message starts with, fragment)
    ({"mailer:smtpProvider": "hotmail"}, "mailer:smtpProvider", "use one of gmail, google-workspace, microsoft365"),
    ({"mailer:smtpProvider": "custom"}, "mailer:smtpConnectionUri", "is not set; run `pulumi config set mailer:smtpConnectionUri"),
    ({"mailer:smtpProvider": "gmail"}, "mailer:smtpUser", "is not set; Gmail needs your Gmail address"),
    ({"mailer:smtpProvider": "gmail", "mailer:smtpUser": "ada@acme.example"}, "mailer:smtpUser", "set mailer:smtpProvider google-workspace"),
    ({"mailer:smtpProvider": "google-workspace", "mailer:smtpUser": "ada@gmail.com"}, "mailer:smtpUser", "set mailer:smtpProvider gmail"),
    ({"mailer:smtpProvider": "gmail", "mailer:smtpUser": "ada@gmail.com", "mailer:smtpConnectionUri": "smtps://ada%40gmail.com@smtp.office365.com:465"},
     "mailer:smtpConnectionUri", "names a host other than Gmail's (smtp.gmail.com)"),
    ({"mailer:smtpProvider": "gmail", "mailer:smtpConnectionUri": "smtp://ada%40gmail.com@smtp.gmail.com:2525"},
     "mailer:smtpConnectionUri", "uses smtp:// on port 2525, which Gmail does not serve; use smtps:// on 465, smtp:// on 587"),
    ({"mailer:smtpProvider": "microsoft365", "mailer:smtpConnectionUri": "smtps://noreply%40acme.example@smtp.office365.com:465",
      "mailer:oauth2TokenUrl": MS_TOKEN_URL, "mailer:oauth2ClientId": "c"},
     "mailer:smtpConnectionUri", "which Microsoft 365 does not serve; use smtp:// on 587"),
    ({"mailer:smtpProvider": "gmail", "mailer:smtpConnectionUri": "smtp://ada%40gmail.com@smtp.gmail.com:25"},
     "mailer:smtpConnectionUri", "port 25, which Google Cloud blocks"),
    ({"mailer:smtpProvider": "sendgrid", "mailer:smtpUser": "ada@acme.example"}, "mailer:smtpUser", "must be the literal word apikey"),
    ({"mailer:smtpProvider": "sendgrid", "mailer:smtpConnectionUri": "smtp://sendgrid-user@smtp.sendgrid.net:587"},
     "the user of mailer:smtpConnectionUri", "must be the literal word apikey"),
    # custom still knows SendGrid's rule when the host is SendGrid's
    ({"mailer:smtpConnectionUri": "smtp://ada@smtp.sendgrid.net:587"}, "the user of mailer:smtpConnectionUri", "literal word apikey"),
    ({"mailer:smtpProvider": "sendgrid", "mailer:smtpAuthMethod": "XOAUTH2"}, "mailer:smtpAuthMethod", "is XOAUTH2, which SendGrid does not take"),
    ({"mailer:smtpProvider": "sendgrid", "mailer:smtpConnectionUri": "smtp://apikey@smtp.sendgrid.net:587?authMethod=XOAUTH2"},
     "the authMethod option of mailer:smtpConnectionUri", "which SendGrid does not take"),
    ({"mailer:smtpProvider": "sendgrid", "mailer:smtpProviderRegion": "eu"}, "mailer:smtpProviderRegion", "SendGrid has no regions"),
    ({"mailer:smtpProvider": "amazon-ses", "mailer:smtpUser": "AKIA"}, "mailer:smtpProviderRegion", "is not set; Amazon SES needs the AWS region"),
    ({"mailer:smtpProvider": "amazon-ses", "mailer:smtpProviderRegion": "Frankfurt", "mailer:smtpUser": "AKIA"},
     "mailer:smtpProviderRegion", "is 'Frankfurt', which Amazon SES does not have"),
    ({"mailer:smtpProvider": "amazon-ses", "mailer:smtpProviderRegion": "eu-west-1", "mailer:smtpUser": "AKIA",
      "mailer:smtpConnectionUri": "smtps://AKIA@email-smtp.us-east-1.amazonaws.com:465"},
     "mailer:smtpConnectionUri", "host other than Amazon SES's in region eu-west-1 (email-smtp.eu-west-1.amazonaws.com)"),
    ({"mailer:smtpProvider": "aliyun-directmail", "mailer:smtpUser": "noreply@mail.acme.example"},
     "mailer:smtpProviderRegion", "cn-hangzhou, ap-southeast-1, us-east-1 or eu-central-1"),
    ({"mailer:smtpProvider": "aliyun-directmail", "mailer:smtpProviderRegion": "ap-southeast-2", "mailer:smtpUser": "noreply@mail.acme.example"},
     "mailer:smtpProviderRegion", "is 'ap-southeast-2', which Aliyun Direct Mail does not have"),
    ({"mailer:smtpProvider": "aliyun-directmail", "mailer:smtpProviderRegion": "cn-hangzhou", "mailer:smtpUser": "noreply"},
     "mailer:smtpUser", "is not an email address; Aliyun Direct Mail logs in with the full address"),
    ({"mailer:smtpProvider": "aliyun-directmail", "mailer:smtpProviderRegion": "cn-hangzhou",
      "mailer:smtpConnectionUri": "smtp://noreply%40mail.acme.example@smtpdm.aliyun.com:587"},
     "mailer:smtpConnectionUri", "use smtps:// on 465, smtp:// on 80"),
    ({"mailer:smtpProvider": "custom", "mailer:smtpConnectionUri": "smtp://m@relay.acme.test:587", "mailer:smtpProviderRegion": "eu"},
     "mailer:smtpProviderRegion", "custom, which has no regions"),
    ({"mailer:smtpUser": "other", "mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587"},
     "mailer:smtpUser", "and the user of mailer:smtpConnectionUri differ"),
    ({"mailer:smtpAuthMethod": "CRAM-MD5", "mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587"},
     "mailer:smtpAuthMethod", "use PLAIN, LOGIN or XOAUTH2"),
    ({"mailer:smtpAuthMethod": "PLAIN", "mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587?authMethod=LOGIN"},
     "mailer:smtpAuthMethod", "and the authMethod option of mailer:smtpConnectionUri differ; change one"),
    # XOAUTH2
    ({**XOAUTH2_365, "mailer:oauth2TokenUrl": None}, "mailer:oauth2TokenUrl", "is not set; Microsoft 365 XOAUTH2 needs your tenant's token endpoint"),
    ({**XOAUTH2_365, "mailer:oauth2TokenUrl": "https://login.example.com/acme/token"},
     "mailer:oauth2TokenUrl", "is not a Microsoft 365 token endpoint; use https://login.microsoftonline.com/<tenant"),
    ({**XOAUTH2_365, "mailer:oauth2ClientId": None}, "mailer:oauth2ClientId", "is not set; XOAUTH2 needs the OAuth2 client id"),
    ({"mailer:smtpProvider": "gmail", "mailer:smtpUser": "ada@gmail.com", "mailer:smtpAuthMethod": "XOAUTH2", "mailer:oauth2ClientId": "c",
      "mailer:oauth2TokenUrl": "https://accounts.example.com/token"},
     "mailer:oauth2TokenUrl", "is not Gmail's token endpoint https://oauth2.googleapis.com/token"),
    ({"mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587", "mailer:smtpAuthMethod": "XOAUTH2", "mailer:oauth2ClientId": "c"},
     "mailer:oauth2TokenUrl", "is not set; XOAUTH2 needs the provider's OAuth2 token endpoint"),
    ({"mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587", "mailer:smtpAuthMethod": "XOAUTH2", "mailer:oauth2ClientId": "c",
      "mailer:oauth2TokenUrl": "http://tokens.acme.test/token"},
     "mailer:oauth2TokenUrl", "must be an https:// URL (http:// only for a loopback host"),
    ({"mailer:smtpConnectionUri": "smtp://relay.acme.test:587", "mailer:smtpAuthMethod": "XOAUTH2", "mailer:oauth2ClientId": "c",
      "mailer:oauth2TokenUrl": "https://tokens.acme.test/token"},
     "mailer:smtpUser", "XOAUTH2 logs in as the mailbox"),
    ({"mailer:smtpProvider": "gmail", "mailer:smtpUser": "ada@gmail.com", "mailer:oauth2ClientId": "c"},
     "mailer:oauth2ClientId", "is set but the stack does not use XOAUTH2"),
    # The function refuses these in the URI; refuse them before they get there.
    ({**XOAUTH2_365, "mailer:oauth2ClientId": "3f1c client"}, "mailer:oauth2ClientId", "contains whitespace or a control character"),
    ({"mailer:smtpProvider": "sendgrid", "mailer:smtpUser": "api\tkey"}, "mailer:smtpUser", "contains whitespace or a control character"),
    ({**XOAUTH2_365, "mailer:oauth2TokenUrl": MS_TOKEN_URL + " x"}, "mailer:oauth2TokenUrl", "contains whitespace"),
    ({"mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587", "mailer:smtpAuthMethod": "XOAUTH2", "mailer:oauth2ClientId": "c",
      "mailer:oauth2TokenUrl": "https://tokens.acme.test:99999/token"}, "mailer:oauth2TokenUrl", "has a port that is not a number"),
    ({"mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587", "mailer:smtpAuthMethod": "XOAUTH2", "mailer:oauth2ClientId": "c",
      "mailer:oauth2TokenUrl": "https://svc:pw@tokens.acme.test/token"}, "mailer:oauth2TokenUrl", "must not carry credentials"),
    ({"mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587?authMethod=XOAUTH2&oauth2ClientId=c"
                                  "&oauth2TokenUrl=https%3A%2F%2Fsvc%3Apw%40tokens.acme.test%2Ftoken"},
     "mailer:oauth2TokenUrl", "must not carry credentials"),
]


def _id(keys: dict[str, Optional[str]], named: str) -> str:
    return f"{keys.get('mailer:smtpProvider') or 'custom'}:{named.rsplit(':', 1)[-1]}"


def load(harness: PulumiHarness, keys: dict[str, Optional[str]], secrets: Optional[dict[str, str]] = None,
         plain: tuple[str, ...] = ()) -> StackConfig:
    secrets = {"mailer:smtpPassword": TEST_PASSWORD} if secrets is None else secrets
    config = {k: v for k, v in {**BASE, **keys, **secrets}.items() if v is not None}
    harness.install("test", config, [k for k in secrets if k not in plain])
    return load_config(pulumi.Config("mailer"), pulumi.Config("gcp"))


def refused(harness: PulumiHarness, keys: dict[str, Optional[str]], secrets: Optional[dict[str, str]] = None,
            plain: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as raised:
        load(harness, keys, secrets, plain)
    message = str(raised.value)
    assert "\n" not in message
    for value in (TEST_PASSWORD, CLIENT_SECRET, REFRESH_TOKEN):
        assert value not in message
    return message


@pytest.mark.parametrize(("keys", "named", "fragment"), REFUSED, ids=[_id(k, n) + f"-{i}" for i, (k, n, _) in enumerate(REFUSED)])
def test_a_conflicting_or_missing_setting_is_refused_naming_its_key(
    pulumi_mocks: PulumiHarness, keys: dict[str, Optional[str]], named: str, fragment: str
) -> None:
    message = refused(pulumi_mocks, keys, {} if keys.get("mailer:smtpProvider") == "microsoft365" and "mailer:smtpAuthMethod" not in keys else None)
    assert message.startswith(named), message
    assert fragment in message, message


def test_the_user_is_not_echoed_from_the_uri(pulumi_mocks: PulumiHarness) -> None:
    message = refused(pulumi_mocks, {"mailer:smtpProvider": "sendgrid", "mailer:smtpConnectionUri": "smtp://Secret-Looking-User@smtp.sendgrid.net:587"})
    assert "Secret-Looking-User" not in message


# ------------------------------------------------------------------------- secrets per auth method

OAUTH2_SECRETS = {"mailer:oauth2ClientSecret": CLIENT_SECRET, "mailer:oauth2RefreshToken": REFRESH_TOKEN}


def test_xoauth2_reads_both_oauth2_secrets_as_secret_outputs_and_no_password(pulumi_mocks: PulumiHarness) -> None:
    seen: dict[str, Any] = {}

    @pulumi.runtime.test
    def check() -> pulumi.Output:
        loaded = load(pulumi_mocks, XOAUTH2_365, OAUTH2_SECRETS)
        seen["password"] = loaded.smtp_password
        assert loaded.oauth2_client_secret is not None and loaded.oauth2_refresh_token is not None
        outputs = [loaded.oauth2_client_secret, loaded.oauth2_refresh_token]
        return pulumi.Output.all(*(o.is_secret() for o in outputs), *outputs).apply(lambda v: seen.update(values=v))

    check()
    assert seen == {"password": None, "values": [True, True, CLIENT_SECRET, REFRESH_TOKEN]}


@pytest.mark.parametrize(("secrets", "plain", "named", "fragment"), [
    ({}, (), "mailer:oauth2ClientSecret", "is not set; run `pulumi config set --secret mailer:oauth2ClientSecret`"),
    ({"mailer:oauth2ClientSecret": CLIENT_SECRET}, (), "mailer:oauth2RefreshToken", "is not set; run `pulumi config set --secret mailer:oauth2RefreshToken`"),
    (OAUTH2_SECRETS, ("mailer:oauth2RefreshToken",), "mailer:oauth2RefreshToken", "is stored in plain text in the stack file"),
    (OAUTH2_SECRETS, ("mailer:oauth2ClientSecret",), "mailer:oauth2ClientSecret", "is stored in plain text in the stack file"),
    ({**OAUTH2_SECRETS, "mailer:smtpPassword": TEST_PASSWORD}, (), "mailer:smtpPassword",
     "is set but the stack authenticates with XOAUTH2, which uses no SMTP password; run `pulumi config rm mailer:smtpPassword`"),
], ids=["no-client-secret", "no-refresh-token", "plain-refresh-token", "plain-client-secret", "password-too"])
def test_xoauth2_secrets_are_required_as_secrets(
    pulumi_mocks: PulumiHarness, secrets: dict[str, str], plain: tuple[str, ...], named: str, fragment: str
) -> None:
    message = refused(pulumi_mocks, XOAUTH2_365, secrets, plain)
    assert message.startswith(named) and fragment in message, message


def test_oauth2_secrets_without_xoauth2_are_refused(pulumi_mocks: PulumiHarness) -> None:
    message = refused(pulumi_mocks, {"mailer:smtpProvider": "sendgrid"}, {"mailer:smtpPassword": TEST_PASSWORD, **OAUTH2_SECRETS})
    assert message == (
        "mailer:oauth2ClientSecret is set but the stack does not use XOAUTH2; run `pulumi config rm mailer:oauth2ClientSecret`, "
        "or `pulumi config set mailer:smtpAuthMethod XOAUTH2`; "
        "mailer:oauth2RefreshToken is set but the stack does not use XOAUTH2; run `pulumi config rm mailer:oauth2RefreshToken`, "
        "or `pulumi config set mailer:smtpAuthMethod XOAUTH2`"
    )


def test_an_invalid_xoauth2_stack_still_names_its_missing_secrets(pulumi_mocks: PulumiHarness) -> None:
    message = refused(pulumi_mocks, {**XOAUTH2_365, "mailer:region": "mars-north1"}, {})
    assert message.startswith("mailer:region") and "mailer:oauth2ClientSecret is not set" in message
    assert "mailer:smtpPassword" not in message


# -------------------------------------------------------------------------- what EmailTrigger declares


def build(harness: PulumiHarness, keys: dict[str, str], **secrets: Any) -> StackRun:
    loaded = settings(**keys)
    args = EmailTriggerArgs(settings=loaded, source=collect_source(REPO_ROOT / "functions"), **secrets)
    return harness.run(lambda: EmailTrigger("unit", args))


def env_of(run: StackRun, entry_point: str) -> dict[str, Any]:
    return run.function(entry_point).inputs["serviceConfig"]["environmentVariables"]


def secret_by_id(run: StackRun) -> dict[str, Any]:
    return {r.inputs["secretId"]: r for r in run.of_type("gcp:secretmanager/secret:Secret")}


def xoauth2_run(harness: PulumiHarness) -> StackRun:
    return build(harness, XOAUTH2_365, smtp_password=None, oauth2_client_secret=CLIENT_SECRET, oauth2_refresh_token=REFRESH_TOKEN)


def test_xoauth2_declares_two_secrets_and_no_password_secret(pulumi_mocks: PulumiHarness) -> None:
    run = xoauth2_run(pulumi_mocks)
    assert set(secret_by_id(run)) == {"mailer-oauth2-client-secret", "mailer-oauth2-refresh-token"}
    versions = run.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    assert sorted(unwrap(v.raw["secretData"]) for v in versions) == sorted([CLIENT_SECRET, REFRESH_TOKEN])
    assert all(is_secret(v.raw["secretData"]) for v in versions)
    for value in (CLIENT_SECRET, REFRESH_TOKEN):
        assert {r.name: plain_occurrences(r.raw, value) for r in run.registrations if plain_occurrences(r.raw, value)} == {}


def test_xoauth2_iam_is_scoped_to_each_secret(pulumi_mocks: PulumiHarness) -> None:
    run = xoauth2_run(pulumi_mocks)
    grants = {(r.inputs["secretId"], r.inputs["role"], r.inputs["member"]) for r in run.of_type(SECRET_MEMBER)}
    assert grants == {
        ("mailer-oauth2-client-secret", "roles/secretmanager.secretAccessor", RUNTIME),
        ("mailer-oauth2-refresh-token", "roles/secretmanager.secretAccessor", RUNTIME),
        # rotation: the runtime account may add versions to the refresh token's secret and destroy the one
        # a rotation replaced (secretVersionManager), on that secret and no other
        ("mailer-oauth2-refresh-token", "roles/secretmanager.secretVersionManager", RUNTIME),
    }
    assert not any(r.inputs["role"] == "roles/secretmanager.secretVersionAdder" for r in run.of_type(SECRET_MEMBER))
    assert len(run.of_type(SECRET_MEMBER)) == 3
    # Nothing project-wide was added for secrets: the same three project grants as a password stack.
    project_roles = sorted(r.inputs["role"] for r in run.of_type(PROJECT_MEMBER))
    assert project_roles == ["roles/datastore.user", "roles/eventarc.eventReceiver", "roles/eventarc.serviceAgent"]
    assert not any("secretmanager" in r.inputs.get("role", "") for r in run.registrations if r.type != SECRET_MEMBER)


@pytest.mark.parametrize("entry_point", ["process_mail", "sweep_mail"])
def test_xoauth2_environment_names_the_secrets_and_carries_no_value(pulumi_mocks: PulumiHarness, entry_point: str) -> None:
    run = xoauth2_run(pulumi_mocks)
    env = env_of(run, entry_point)
    assert env["SMTP_PROVIDER"] == "microsoft365"
    assert env["SMTP_OAUTH2_CLIENT_SECRET_SECRET"] == "projects/acme-mailer-unit/secrets/mailer-oauth2-client-secret"
    assert env["SMTP_OAUTH2_REFRESH_TOKEN_SECRET"] == "projects/acme-mailer-unit/secrets/mailer-oauth2-refresh-token"
    assert not {"SMTP_PASSWORD", "SMTP_PASSWORD_SECRET", "SMTP_OAUTH2_CLIENT_SECRET", "SMTP_OAUTH2_REFRESH_TOKEN"} & set(env)
    assert options(env["SMTP_CONNECTION_URI"])["authMethod"] == "XOAUTH2"
    assert run.function(entry_point).inputs["serviceConfig"].get("secretEnvironmentVariables", []) == []
    # The secrets have a version before the function first reads versions/latest.
    versions = {r.urn for r in run.of_type("gcp:secretmanager/secretVersion:SecretVersion")}
    assert versions <= set(run.function(entry_point).dependencies)


def test_runtime_mode_names_the_password_secret_instead_of_pinning_it(pulumi_mocks: PulumiHarness) -> None:
    run = build(pulumi_mocks, {"mailer:smtpProvider": "sendgrid", "mailer:smtpSecretsAtRuntime": "true"}, smtp_password=TEST_PASSWORD)
    for entry_point in ("process_mail", "sweep_mail"):
        function = run.function(entry_point)
        env = function.inputs["serviceConfig"]["environmentVariables"]
        assert env["SMTP_PASSWORD_SECRET"] == "projects/acme-mailer-unit/secrets/mailer-smtp-password"
        assert env["SMTP_PROVIDER"] == "sendgrid"
        assert function.inputs["serviceConfig"].get("secretEnvironmentVariables", []) == []
        assert run.one("gcp:secretmanager/secretVersion:SecretVersion").urn in function.dependencies
    grant = run.one(SECRET_MEMBER).inputs
    assert (grant["secretId"], grant["role"], grant["member"]) == ("mailer-smtp-password", "roles/secretmanager.secretAccessor", RUNTIME)
    assert [r.name for r in run.registrations if plain_occurrences(r.raw, TEST_PASSWORD)] == []


def test_pinned_mode_stays_the_default(pulumi_mocks: PulumiHarness) -> None:
    run = build(pulumi_mocks, {"mailer:smtpProvider": "sendgrid"}, smtp_password=TEST_PASSWORD)
    service = run.function("process_mail").inputs["serviceConfig"]
    assert "SMTP_PASSWORD_SECRET" not in service["environmentVariables"]
    assert [v["key"] for v in service["secretEnvironmentVariables"]] == ["SMTP_PASSWORD"]
    assert [r.inputs["role"] for r in run.of_type(SECRET_MEMBER)] == ["roles/secretmanager.secretAccessor"]


def test_the_program_deploys_an_xoauth2_stack_end_to_end(pulumi_mocks: PulumiHarness) -> None:
    """__main__.py with a Microsoft 365 stack: no password needed, both OAuth2 secrets stored, no plain copy."""
    config = {**BASE, **XOAUTH2_365, **OAUTH2_SECRETS}
    pulumi_mocks.install("xoauth2", config, list(OAUTH2_SECRETS))
    run = pulumi_mocks.run_main()
    assert set(secret_by_id(run)) == {"mailer-oauth2-client-secret", "mailer-oauth2-refresh-token"}
    assert run.exports["secret_id"] is None
    for value in (CLIENT_SECRET, REFRESH_TOKEN):
        assert [r.name for r in run.registrations if plain_occurrences(r.raw, value)] == []
        assert plain_occurrences(run.exports, value) == []


@pytest.mark.parametrize("keys", [keys for keys, *_ in BUILT] + [
    {"mailer:smtpProvider": "gmail", "mailer:smtpUser": "ada@gmail.com", "mailer:smtpAuthMethod": "XOAUTH2", "mailer:oauth2ClientId": "1.apps"},
], ids=[f"{k['mailer:smtpProvider']}-{i}" for i, k in enumerate([keys for keys, *_ in BUILT] + [{"mailer:smtpProvider": "gmail"}])])
def test_the_function_reads_every_built_uri_as_the_preset_meant_it(keys: dict[str, str]) -> None:
    """The deployed function's own parser (functions/mailer/smtp_uri.py) on each URI a preset builds."""
    from mailer.smtp_uri import parse_smtp_uri

    loaded = settings(**keys)
    parsed = parse_smtp_uri(loaded.smtp_connection_uri or "")
    parts = urlsplit(loaded.smtp_connection_uri or "")
    assert (parsed.scheme, parsed.host, parsed.port, parsed.username) == (parts.scheme, parts.hostname, parts.port, loaded.smtp_user)
    assert (parsed.auth_method or None) == (options(loaded.smtp_connection_uri or "").get("authMethod"))
    if loaded.uses_xoauth2:
        assert (parsed.oauth2_token_url, parsed.oauth2_client_id) == (loaded.oauth2_token_url, loaded.oauth2_client_id)


@pytest.mark.parametrize("token_url", [
    "https://tokens.acme.test/token", "HTTPS://tokens.acme.test/token", "http://localhost./token",
    "http://tokens.localhost:8444/token", "http://[::1]:8444/token", "https://tokens.acme.test:8443/o/token?tenant=x",
])
def test_a_token_url_the_model_accepts_is_one_the_function_accepts(token_url: str) -> None:
    """infra/providers.check_token_url and the function's oauth2TokenUrl check agree (the model may not import it)."""
    from mailer.smtp_uri import parse_smtp_uri

    loaded = settings(**{"mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587", "mailer:smtpAuthMethod": "XOAUTH2",
                         "mailer:oauth2ClientId": "c", "mailer:oauth2TokenUrl": token_url})
    assert parse_smtp_uri(loaded.smtp_connection_uri or "").oauth2_token_url == token_url
