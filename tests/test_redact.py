"""Secret redaction: realistic credentials are removed, ordinary tool output is untouched,
and large or adversarial text is processed in linear time.

Secret-shaped strings are assembled at run time from parts, so this file holds no
string a secret scanner would take for a live credential.
"""

from __future__ import annotations

import base64
import random
import re
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relayburnd.redact import RULES, redact, redact_many

_rng = random.Random(20240611)
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
B64 = ALNUM + "+/"


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def join(*parts: str) -> str:
    return "".join(parts)


def pem(label: str, lines: int = 6) -> str:
    body = "\n".join(rand(64, B64) for _ in range(lines)) + "\n" + rand(20, B64) + "=="
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"


def jwt() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    claims = base64.urlsafe_b64encode(
        b'{"sub":"1234567890","name":"Ada","iat":1716239022}'
    ).decode().rstrip("=")
    return f"{header}.{claims}.{rand(43, ALNUM + '-_')}"


# (rule, text around the secret with {} where it goes, the secret, the part kept verbatim)
SECRETS: list[tuple[str, str, str]] = [
    ("anthropic-key", "export ANTHROPIC_API_KEY={}",
     join("sk-ant-", "api03-", rand(93, ALNUM + "-_"), "AA")),
    ("anthropic-key", "key: {}", join("sk-ant-", "admin01-", rand(80, ALNUM + "-_"))),
    ("openai-key", "OPENAI_API_KEY={}", join("sk-", "proj-", rand(120, ALNUM + "-_"))),
    ("openai-key", "api_key = '{}'", join("sk-", rand(48))),
    ("openai-key", "client = OpenAI(api_key=\"{}\")", join("sk-", "svcacct-", rand(60))),
    ("aws-access-key-id", "aws_access_key_id = {}", join("AK", "IA", rand(16, UPPER_DIGITS))),
    ("aws-access-key-id", '"AccessKeyId": "{}",', join("AS", "IA", rand(16, UPPER_DIGITS))),
    ("aws-secret-key", "aws_secret_access_key = {}", rand(40, B64)),
    ("aws-secret-key", '"SecretAccessKey": "{}",', rand(40, B64)),
    ("aws-secret-key", "export AWS_SECRET_ACCESS_KEY={}", rand(40, B64)),
    ("aws-secret-key", "  secretAccessKey: '{}',", rand(40, B64)),
    ("github-token", "GITHUB_TOKEN={}", join("gh", "p_", rand(36))),
    ("github-token", "token: {}", join("gh", "s_", rand(36))),
    ("github-token", "Authorization: token {}",
     join("github", "_pat_", rand(22), "_", rand(59))),
    ("gitlab-token", "PRIVATE-TOKEN: {}", join("gl", "pat-", rand(20, ALNUM + "-_"))),
    ("slack-token", "SLACK_BOT_TOKEN={}",
     join("xo", "xb-", rand(12, "0123456789"), "-", rand(13, "0123456789"), "-", rand(24))),
    ("slack-token", "user token {}",
     join("xo", "xp-", rand(12, "0123456789"), "-", rand(12, "0123456789"), "-", rand(32))),
    ("slack-token", "SLACK_APP_TOKEN={}",
     join("xa", "pp-1-", "A0", rand(9, UPPER_DIGITS), "-", rand(13, "0123456789"), "-",
          rand(64, "0123456789abcdef"))),
    ("slack-webhook", "curl -X POST {} -d @msg.json",
     join("https://hooks.", "slack.com/services/T", rand(8, UPPER_DIGITS), "/B",
          rand(10, UPPER_DIGITS), "/", rand(24))),
    ("google-api-key", "GOOGLE_API_KEY={}", join("AI", "za", rand(35, ALNUM + "-_"))),
    ("stripe-key", "STRIPE_SECRET_KEY={}", join("sk", "_live_", rand(99))),
    ("stripe-key", "stripe.api_key = \"{}\"", join("rk", "_test_", rand(24))),
    ("azure-storage-key",
     "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={};EndpointSuffix=core.windows.net",
     join(rand(86, B64), "==")),
    ("azure-storage-key",
     "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={}",
     join(rand(43, B64), "=")),
    ("jwt", "cookie: session={}; Path=/", jwt()),
    ("bearer-token", "Authorization: Bearer {}", rand(40, ALNUM + "._-")),
    ("bearer-token", "curl -H 'authorization: bearer {}' https://api.example.com",
     rand(32, ALNUM)),
    ("private-key", "{}", pem("RSA PRIVATE KEY")),
    ("private-key", "key file:\n{}\n", pem("PRIVATE KEY")),
    ("private-key", "{}", pem("EC PRIVATE KEY", 3)),
    ("private-key", "{}", pem("OPENSSH PRIVATE KEY", 7)),
    ("private-key", "{}", pem("ENCRYPTED PRIVATE KEY")),
    ("private-key", "{}", pem("PGP PRIVATE KEY BLOCK")),
    ("url-password", "DATABASE_URL=postgresql://app:{}@db.internal:5432/usage", rand(24)),
    ("url-password", "mysql://root:{}@127.0.0.1/app", rand(16)),
    ("url-password", "REDIS_URL=redis://:{}@cache:6379/0", rand(32)),
    ("url-password", "git clone https://oauth2:{}@gitlab.example.com/g/p.git", rand(20)),
    ("url-password", "amqp://guest:{}@rabbit:5672/", rand(12)),
]


def secret_id(case: tuple[str, str, str]) -> str:
    return f"{case[0]}:{case[1][:24]}"


class TestSecretsAreRedacted:
    """Each secret in the corpus disappears and its rule is named."""

    @pytest.mark.parametrize("case", SECRETS, ids=[secret_id(c) for c in SECRETS])
    def test_secret_is_replaced(self, case: tuple[str, str, str]) -> None:
        """The secret's bytes are gone, the marker names the rule, the context stays."""
        rule, context, secret = case
        text = "before the secret\n" + context.format(secret) + "\nafter the secret"
        out, count = redact(text)
        assert count >= 1
        assert f"[REDACTED:{rule}]" in out
        for piece in re.findall(r"[A-Za-z0-9+/_\-]{12,}", secret):
            assert piece not in out, f"{piece!r} survived in {out!r}"
        prefix, suffix = context.split("{}")
        assert out.startswith("before the secret\n" + prefix)
        assert out.endswith(suffix + "\nafter the secret")

    def test_kept_groups_stay_verbatim(self) -> None:
        """Header names, URL users and key names are kept around the marker."""
        token = rand(40)
        assert redact(f"Authorization: Bearer {token}")[0] == \
            "Authorization: Bearer [REDACTED:bearer-token]"
        assert redact(f"postgres://app:{token}@db/x")[0] == \
            "postgres://app:[REDACTED:url-password]@db/x"
        assert redact(f"AccountKey={rand(88, B64)};")[0] == \
            "AccountKey=[REDACTED:azure-storage-key];"

    def test_every_occurrence_is_counted(self) -> None:
        """Several secrets in one text are all replaced and counted."""
        keys = [join("gh", "p_", rand(36)) for _ in range(3)]
        text = " and ".join(keys) + "\n" + join("AK", "IA", rand(16, UPPER_DIGITS))
        out, count = redact(text)
        assert count == 4
        assert out.count("[REDACTED:github-token]") == 3
        assert out.count("[REDACTED:aws-access-key-id]") == 1

    def test_truncated_private_key_is_redacted(self) -> None:
        """A private key cut off before its END line (truncated tool output) is still removed."""
        key = pem("RSA PRIVATE KEY")
        cut = key[: key.index("-----END") - 30]
        body_line = cut.splitlines()[2]
        out, _ = redact(f"$ head -c 300 id_rsa\n{cut}\n[output truncated]")
        assert body_line not in out
        assert "[REDACTED:private-key]" in out
        assert out.endswith("[output truncated]")

    def test_json_escaped_private_key_is_redacted(self) -> None:
        """A key inside a JSON string (newlines written as \\n) is removed."""
        key = pem("PRIVATE KEY").replace("\n", "\\n")
        out, _ = redact('{"private_key": "' + key + '", "client_email": "x@y.iam"}')
        assert out == '{"private_key": "[REDACTED:private-key]", "client_email": "x@y.iam"}'

    def test_every_rule_is_exercised_by_the_corpus(self) -> None:
        """The corpus covers every rule, so a new rule needs a realistic example here."""
        assert {r.name for r in RULES} == {case[0] for case in SECRETS}


def png_data_uri() -> str:
    data = bytes(random.Random(7).randrange(256) for _ in range(30_000))
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + data).decode()


def ordinary_text() -> str:
    """A sample of ordinary agent tool output and prose without any secret."""
    shas = [f"{random.Random(i).getrandbits(160):040x}" for i in range(20)]
    uuids = [str(uuid.UUID(int=random.Random(i).getrandbits(128))) for i in range(20)]
    return "\n".join([
        "$ git log --oneline -5",
        *(f"{sha[:7]} Fix task-runner flake in disk-cache tests" for sha in shas[:5]),
        "$ git rev-parse HEAD",
        shas[5],
        "commit " + shas[6],
        "Merge: " + shas[7][:9] + " " + shas[8][:9],
        "$ ls -la",
        "drwxr-xr-x  5 dev dev  4096 Jun 11 10:02 .",
        "-rw-r--r--  1 dev dev  1204 Jun 11 10:01 pyproject.toml",
        "-rw-r--r--  1 dev dev 90210 Jun 11 10:01 package-lock.json",
        '    "integrity": "sha512-' + base64.b64encode(bytes(range(64))).decode() + '",',
        "sha256:" + shas[9] + shas[10][:24],
        *(f"session {u} resumed" for u in uuids[:10]),
        "def risk_assessment(task: Task, desk_id: int) -> float:",
        '    """Return the weighted risk-score for a task-list item."""',
        "    return sum(w * s for w, s in zip(WEIGHTS, scores, strict=True))",
        "class TestLiveStream:",
        "    def test_live_stream_reconnects(self, pk_test: int) -> None: ...",
        "const token = await getToken(); // bearer tokens are fetched at runtime",
        "Use a Bearer token in the Authorization header; see the docs.",
        "The bearer of this letter is a friend.",
        "See https://docs.python.org/3/library/re.html#re.sub and "
        "https://github.com/encode/httpx/blob/master/httpx/_client.py#L100",
        "ssh://git@github.com:22/org/repo.git and git@github.com:org/repo.git",
        "http://localhost:8080/api/v1/users?page=2&per_page=50",
        "https://user@example.com/path (no password)",
        "mailto:ops@example.com, jane.doe+ci@example.org",
        "export PATH=$HOME/.local/bin:$PATH",
        "npm WARN deprecated inflight@1.0.6: This module is not supported",
        "Successfully installed click-8.1.7 msgspec-0.18.6 structlog-24.1.0",
        '    if not pem.startswith("-----BEGIN RSA PRIVATE KEY-----"):',
        "grep: keys/test.pem:1:-----BEGIN EC PRIVATE KEY-----",
        "-----BEGIN CERTIFICATE-----",
        "MIIBszCCAVmgAwIBAgIUYk" + "A" * 40,
        "-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----",
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE" + "B" * 40,
        "-----END PUBLIC KEY-----",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG" + "C" * 30 + " dev@laptop",
        "password: <redacted by the user>",
        "Set AWS_SECRET_ACCESS_KEY in your environment (never commit it).",
        "The Slack channel is #eng-oncall; tokens start with xox and a letter.",
        "Kubernetes: kubectl -n prod get pods -l app=relayburnd -o wide",
        "SELECT id, ts FROM turns WHERE session_id = $1 ORDER BY ts LIMIT 100;",
        "AKIA is the prefix of AWS access key ids; ASIA of temporary ones.",
        "eyJ is how base64 of a JSON object starts.",
        "sk-learn is not a package name; scikit-learn is.",
        png_data_uri(),
        "Tests: 84 passed, 2 skipped in 30.74s",
    ]) + "\n"


class TestOrdinaryTextIsUntouched:
    """No false positives on code, prose, hashes, ids and images."""

    def test_sample_of_tool_output_is_unchanged(self) -> None:
        """The ordinary sample comes back identical with a count of zero."""
        text = ordinary_text()
        out, count = redact(text)
        if count:
            changed = [a for a, b in zip(text.splitlines(), out.splitlines(), strict=True)
                       if a != b]
            pytest.fail(f"false positives: {changed}")
        assert out == text

    @pytest.mark.parametrize("value", [
        str(uuid.UUID(int=12345678901234567890)),
        "3f786850e387550fdab836ed7e6dc881de23001b",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk",
        "https://example.com:8443/a/b@v2",
        "github_pat is the prefix of fine-grained tokens",
    ])
    def test_single_ordinary_values_are_unchanged(self, value: str) -> None:
        """Identifiers that look random but are not secrets stay as they are."""
        assert redact(value) == (value, 0)


class TestPerformance:
    """Redaction cost stays linear in the text size."""

    def test_five_megabytes_of_ordinary_text_is_quick(self) -> None:
        """5 MB of ordinary output that contains every trigger takes under two seconds
        (a rule that rescans the text per trigger takes minutes)."""
        sample = ordinary_text()
        text = sample * (5_000_000 // len(sample) + 1)
        start = time.perf_counter()
        out, count = redact(text)
        elapsed = time.perf_counter() - start
        assert count == 0 and len(out) == len(text)
        assert elapsed < 2.0, f"{elapsed:.2f}s for {len(text):,} chars"

    @pytest.mark.parametrize("text", [
        "src/keys.py:3:-----BEGIN RSA PRIVATE KEY-----\n" * 20_000,
        "a.b" * 100_000 + " https://example.com",
        "foo-bar-" * 60_000 + " https://example.com",
        "sk-" * 100_000,
        ("eyJ" + "A" * 50 + ".") * 20_000,
        "Bearer " * 100_000,
        "http://a:b" * 60_000,
        "x://" * 200_000,
    ], ids=["pem-headers-without-end", "dotted-run", "dashed-run", "sk-run", "eyJ-run",
            "bearer-run", "url-run", "scheme-run"])
    def test_adversarial_repetition_is_linear(self, text: str) -> None:
        """Repeated trigger fragments (grep output, minified code) cannot make a rule
        backtrack quadratically."""
        start = time.perf_counter()
        redact(text)
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{elapsed:.2f}s for {len(text):,} chars"


class TestManyTextsAtOnce:
    """``redact_many`` gives what ``redact`` gives for each text, in order."""

    def test_secrets_among_ordinary_texts(self) -> None:
        """Secrets at the start, middle and end of the batch, beside texts without any."""
        plain = ordinary_text().splitlines()
        texts = [case[1].format(case[2]) for case in SECRETS]
        mixed = [texts[0], *plain[:5], *texts[1:4], "", "ü ✓ 漢字", *plain[5:], *texts[4:]]
        assert redact_many(mixed) == [redact(t) for t in mixed]

    def test_trigger_split_across_two_texts_is_no_trigger(self) -> None:
        """A trigger whose halves end one text and start the next is in neither."""
        texts = ["prefix sk", "-ant-" + rand(40), "AK", "IA" + rand(16, UPPER_DIGITS)]
        assert redact_many(texts) == [(t, 0) for t in texts]

    @given(st.lists(st.lists(st.sampled_from(
        ["a", " ", "\n", "ü", "\x00", "sk-", "AKIA", "://", "eyJ", "-----BEGIN ", "x" * 20]
    )).map("".join), max_size=12))
    @settings(max_examples=200, deadline=None)
    def test_same_as_one_by_one(self, texts: list[str]) -> None:
        """Random texts built from trigger pieces, NULs and non-ASCII characters."""
        assert redact_many(texts) == [redact(t) for t in texts]
