"""The container recipe in deploy/ (issue 14, part 4): the node's image, deepstream's image, the compose file.

What needs no container daemon is checked everywhere: the compose file parses and names three deepstream
services, built from a Dockerfile that exists, each with the environment deepstream's config asks for and
seeded with the other two; every file a Dockerfile copies exists and is not left out of the build context
by .dockerignore; the images run as a user that is not root and expose swarm's port; the node's config
and (with Node.js) the plugin options of deepstream's config, as each container would read them, are
valid. Where `docker` or `podman` has a working daemon, the node's image is also built and run (its
`listening` line); elsewhere that test is skipped, saying why.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarm.config import Options, load_config_file

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yml"
NODE_DOCKERFILE = DEPLOY / "Dockerfile"
DEEPSTREAM_DOCKERFILE = DEPLOY / "deepstream.Dockerfile"
DEEPSTREAM_CONFIG = DEPLOY / "deepstream.yml"
PLUGIN = ROOT / "integrations" / "deepstream"
NODE = shutil.which("node")
SWARM_PORT = 6021

# Bounds (seconds): asking a container tool whether its daemon answers; building the node's image (pip
# installs the package and its dependencies); the built node printing its `listening` line.
INFO_TIMEOUT = 20.0
BUILD_TIMEOUT = 600.0
RUN_TIMEOUT = 60.0


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Is `path` (relative to the context) or one of its parents left out by a .dockerignore pattern?"""
    parts = Path(path).parts
    for index in range(1, len(parts) + 1):
        prefix = "/".join(parts[:index])
        for pattern in patterns:
            name = parts[index - 1]
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(name, pattern.removeprefix("**/")):
                return True
    return False


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def deepstream_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose()["services"].items() if name.startswith("deepstream")}


def deepstream_config_for(environment: dict[str, str]) -> dict[str, Any]:
    """deploy/deepstream.yml as deepstream reads it in a container with `environment`: each ${NAME} is
    replaced by the variable's value, or by nothing (deepstream's js-yaml-loader does the same)."""
    text = DEEPSTREAM_CONFIG.read_text(encoding="utf-8")
    return yaml.safe_load(re.sub(r"\$\{([^}]+)\}", lambda match: environment.get(match.group(1), ""), text))


# ---------------------------------------------------------------------- without a daemon


def test_compose_runs_three_deepstream_servers_that_seed_each_other() -> None:
    services = deepstream_services()
    assert len(services) == 3, f"expected 3 deepstream services in {COMPOSE.name}, got {sorted(services)}"
    used = set(re.findall(r"\$\{([^}]+)\}", DEEPSTREAM_CONFIG.read_text(encoding="utf-8")))
    assert used, "deepstream.yml takes nothing from the environment"
    published = []
    for name, service in services.items():
        build = service["build"]
        dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile == DEEPSTREAM_DOCKERFILE, f"{name} is built from {dockerfile}"
        environment = service["environment"]
        assert used <= set(environment), f"{name} does not set {sorted(used - set(environment))}"
        assert environment["DEEPSTREAM_SERVER_NAME"] == name
        assert environment["SWARM_ADVERTISE_HOST"] == name, "the other nodes dial it by its service name"
        seeds = {seed.strip() for seed in environment["SWARM_SEEDS"].split(",")}
        assert seeds == {f"{other}:{SWARM_PORT}" for other in services if other != name}
        published += [port.split(":")[0] for port in service.get("ports", [])]
        assert all(port.split(":")[1] == "6020" for port in service["ports"]), "deepstream's port is 6020"
    assert len(published) == len(set(published)) == 3, f"host ports {published}"


def test_dockerfiles_copy_only_what_exists_and_run_unprivileged() -> None:
    patterns = dockerignore_patterns()
    for dockerfile in (NODE_DOCKERFILE, DEEPSTREAM_DOCKERFILE):
        steps = instructions(dockerfile)
        assert steps[0][0] == "FROM"
        for word, arguments in steps:
            if word in ("COPY", "ADD") and "--from=" not in arguments:
                *sources, _target = arguments.split()
                for source in sources:
                    what = f"{dockerfile.name} copies {source}"
                    assert (ROOT / source).exists(), f"{what}, which does not exist"
                    assert not ignored(source, patterns), f"{what}, left out by .dockerignore"
        users = [arguments for word, arguments in steps if word == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{dockerfile.name} runs as root"
        exposed = " ".join(arguments for word, arguments in steps if word == "EXPOSE").split()
        assert str(SWARM_PORT) in exposed, f"{dockerfile.name} does not expose swarm's port"
    node_steps = dict(instructions(NODE_DOCKERFILE))
    assert node_steps["FROM"].startswith("python:") and node_steps["FROM"].endswith("-slim")
    assert json.loads(node_steps["ENTRYPOINT"])[:4] == ["python", "-m", "swarm", "node"]


def test_the_images_configs_are_valid() -> None:
    # the node's image: deploy/node.yml at /etc/swarm/config.yml, with a name given by `--option`
    options, _ = load_config_file(str(DEPLOY / "node.yml"))
    parsed = Options.from_mapping({**options, "serverName": "node-a", "advertiseHost": "node-a"})
    assert (parsed.host, parsed.port) == ("0.0.0.0", SWARM_PORT)
    # deepstream's image: the plugin and the venv are where deepstream.yml looks for them
    copies = [arguments.split() for word, arguments in instructions(DEEPSTREAM_DOCKERFILE) if word == "COPY"]
    for name, service in deepstream_services().items():
        config = deepstream_config_for(service["environment"])
        assert config["serverName"] == name
        cluster = config["clusterNode"]
        assert [PLUGIN.relative_to(ROOT).as_posix(), cluster["path"]] in copies
        assert cluster["options"]["python"] == "/opt/swarm/bin/python"
        assert "python3 -m venv /opt/swarm" in DEEPSTREAM_DOCKERFILE.read_text(encoding="utf-8")
        assert cluster["options"]["port"] == SWARM_PORT


@pytest.mark.skipif(NODE is None, reason="checking the plugin's options needs Node.js (`node` on PATH)")
def test_the_plugin_accepts_the_options_of_every_container() -> None:
    """The plugin's constructor checks every option (and starts nothing): each container's, as read."""
    for name, service in deepstream_services().items():
        config = deepstream_config_for(service["environment"])
        script = ("const Plugin = require(process.argv[1]);"
                  "const config = JSON.parse(process.argv[2]);"
                  "const node = new Plugin(config.clusterNode.options, {}, config);"
                  "console.log(JSON.stringify(node.supervised))")
        done = subprocess.run([NODE, "-e", script, str(PLUGIN), json.dumps(config)], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        supervised = json.loads(done.stdout)
        assert supervised["serverName"] == name
        seeds = [seed.strip() for seed in service["environment"]["SWARM_SEEDS"].split(",")]
        assert supervised["seeds"] == seeds
        assert supervised["swarm"]["advertiseHost"] == name


def test_compose_file_is_valid_for_compose_where_it_is_installed() -> None:
    tool = shutil.which("docker")
    if tool is None:
        pytest.skip("`docker` is not installed: `docker compose config` cannot check the compose file")
    probe = subprocess.run([tool, "compose", "version"], capture_output=True, text=True, timeout=INFO_TIMEOUT)
    if probe.returncode != 0:
        pytest.skip(f"docker has no compose plugin here ({(probe.stderr or probe.stdout).strip()[:120]})")
    done = subprocess.run([tool, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                          text=True, timeout=INFO_TIMEOUT)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------- with a daemon


def container_tool() -> tuple[str | None, str]:
    """The first of docker and podman whose daemon answers `info`, or None and why there is none."""
    reasons = []
    for name in ("docker", "podman"):
        path = shutil.which(name)
        if path is None:
            reasons.append(f"`{name}` is not installed")
            continue
        try:
            done = subprocess.run([path, "info"], capture_output=True, text=True, timeout=INFO_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            reasons.append(f"`{name} info` did not answer within {INFO_TIMEOUT:g} s")
            continue
        if done.returncode == 0:
            return path, ""
        said = " ".join((done.stderr or done.stdout).split())[-200:]
        reasons.append(f"`{name} info` failed: {said}")
    return None, "; ".join(reasons)


def test_node_image_builds_and_runs() -> None:
    tool, why = container_tool()
    if tool is None:
        pytest.skip(f"no container tool with a working daemon, so the image is not built: {why}")
    tag = f"swarm-node-test:{uuid.uuid4().hex[:8]}"
    build = subprocess.run([tool, "build", "-f", str(NODE_DOCKERFILE), "-t", tag, str(ROOT)],
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL)
    try:
        assert build.returncode == 0, f"{tool} build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
        name = f"swarm-node-test-{uuid.uuid4().hex[:8]}"
        run = subprocess.Popen([tool, "run", "--rm", "--name", name, tag, "--option", "serverName=image-test",
                                "--option", "advertiseHost=127.0.0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert run.stdout is not None
            watchdog = threading.Timer(RUN_TIMEOUT, run.kill)  # a silent container ends the read
            watchdog.start()
            try:
                line = run.stdout.readline()  # `listening image-test 0.0.0.0:6021`
            finally:
                watchdog.cancel()
            assert line.startswith("listening image-test "), f"first line {line!r}"
            user = subprocess.run([tool, "exec", name, "id", "-u"], capture_output=True, text=True,
                                  timeout=INFO_TIMEOUT)
            assert user.stdout.strip() not in ("", "0"), f"the node runs as uid {user.stdout.strip()!r}"
        finally:
            subprocess.run([tool, "stop", "-t", "10", name], capture_output=True, timeout=RUN_TIMEOUT)
            run.wait(RUN_TIMEOUT)
            assert run.returncode == 0, f"the node did not leave cleanly on SIGTERM: {run.stderr.read()}"
    finally:
        subprocess.run([tool, "rmi", "-f", tag], capture_output=True, timeout=RUN_TIMEOUT)
