"""The deployment documentation names only commands, options and settings that
exist, and quotes the numbers the manifests and the unit actually use."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from deploy_support import K8S, REPO, Bundle, grace_seconds

from relayburnd.cli import cli
from relayburnd.config import setting_for_env

DOCS = [REPO / "docs" / "deployment.md", REPO / "docs" / "ci.md"]


def readme_deployment() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"^## Deployment\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no Deployment section"
    return m.group(1)


def sources() -> dict[str, str]:
    out = {p.name: p.read_text() for p in DOCS}
    out["README.md#deployment"] = readme_deployment()
    return out


def code_spans(text: str) -> list[str]:
    """Fenced blocks and inline code: where commands are written to be typed."""
    blocks = [re.sub(r"(^|\s)#.*$", "", b, flags=re.M)  # comments are prose
              for b in re.findall(r"```[a-z]*\n(.*?)```", text, re.S)]
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return blocks + inline


INVOCATION = re.compile(r"\brelayburnd ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)((?: --?[a-z][\w-]*"
                        r"(?:[ =](?!--)[^\s`|;&)]+)?)*)")


def invocations() -> list[tuple[str, str, str]]:
    """(document, command words, options) for every `relayburnd ...` in code."""
    found = []
    for name, text in sources().items():
        for span in code_spans(text):
            for m in INVOCATION.finditer(span):
                found.append((name, m.group(1), m.group(2)))
    return found


def resolve(words: str) -> click.Command:
    """The command the words name, as far as they name one (commands load lazily)."""
    cmd: click.Command = cli
    for word in words.split():
        if not isinstance(cmd, click.Group):
            break
        sub = cmd.get_command(click.Context(cmd), word)
        if sub is None:
            break
        cmd = sub
    return cmd


class TestCommands:
    def test_the_documents_contain_commands_to_check(self) -> None:
        names = {words.split()[0] for _, words, _ in invocations()}
        assert {"run", "drain", "status", "doctor", "service"} <= names

    @pytest.mark.parametrize("doc,words,options", invocations())
    def test_every_documented_command_and_option_exists(
            self, doc: str, words: str, options: str) -> None:
        cmd = resolve(words)
        assert cmd is not cli, f"{doc}: `relayburnd {words}` is not a command"
        if isinstance(cmd, click.Group):
            pytest.fail(f"{doc}: `relayburnd {words}` names a group without its subcommand")
        known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
        for flag in re.findall(r"--?[a-z][\w-]*", options):
            assert flag in known, f"{doc}: `relayburnd {words}` has no option {flag}"


class TestSettings:
    def test_every_relayburn_variable_in_the_documents_is_a_setting(self) -> None:
        for name, text in sources().items():
            for var in set(re.findall(r"\bRELAYBURN_[A-Z_]+\b", text)):
                assert setting_for_env(var) is not None, f"{name}: unknown setting {var}"


class TestNumbers:
    def test_sizing_quotes_the_manifest_resources(self) -> None:
        text = (REPO / "docs" / "deployment.md").read_text()
        res = Bundle.load(K8S).sidecar()["resources"]
        quoted = (f"`requests: {{cpu: {res['requests']['cpu']}, memory: "
                  f"{res['requests']['memory']}}}` and `limits: {{cpu: \"{res['limits']['cpu']}\","
                  f" memory:\n{res['limits']['memory']}}}`")
        assert quoted in text

    def test_shutdown_budget_quotes_the_manifest_grace_and_drain(self) -> None:
        text = (REPO / "docs" / "deployment.md").read_text()
        bundle = Bundle.load(K8S)
        drain = int(float(bundle.env_of(bundle.sidecar())["RELAYBURN_DRAIN_TIMEOUT"]))
        m = re.search(r"The manifests use (\d+) s = (\d+) \+ (\d+) \+ (\d+)", text)
        assert m, "the shutdown budget sentence is missing"
        grace, agent, doc_drain, margin = (int(g) for g in m.groups())
        assert (grace, doc_drain) == (grace_seconds(bundle), drain)
        assert grace == agent + doc_drain + margin

    def test_ci_doc_drains_with_the_timeout_it_explains(self) -> None:
        text = (REPO / "docs" / "ci.md").read_text()
        assert text.count("relayburnd drain --timeout 60") >= 3


def test_readme_links_the_deployment_guides() -> None:
    section = readme_deployment()
    for target in ("docs/deployment.md", "docs/ci.md"):
        assert target in section
        assert (REPO / target).is_file()
    assert Path(REPO / "systemd" / "relayburnd.service").is_file()
