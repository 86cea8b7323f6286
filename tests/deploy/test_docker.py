"""Static checks of the docker/ stack (no Docker engine needed): services, versions against pyproject's pins, env,
volumes and their ownership, published ports, the one image build, healthchecks, dependency order, database names,
secrets, and the documented MLflow server commands."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / ".env.example"
INIT_DIR = DOCKER / "postgres-init"
DOCS = (REPO / "README.md", DOCKER / "README.md", *sorted((REPO / "docs").glob("*.md")))

AIRFLOW_SERVICES = ("airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker")
EXPECTED_SERVICES = ("postgres", "redis", "mlflow", *AIRFLOW_SERVICES)
CELERY_ONLY = {"redis", "airflow-worker"}
ONE_SHOT = {"airflow-init"}  # runs to completion: no healthcheck, others wait for it to complete
RECVAE_SERVICES = ("mlflow", *AIRFLOW_SERVICES)  # the services that run the project image
BUILDER = "airflow-init"  # the one service that builds it (every Airflow service depends on it)
BIND_VAR = "RECVAE_BIND_ADDRESS"  # host address the UIs are published on; loopback unless set
ROOT_USERS = ("0", "root")
SECRET_WORDS = ("PASSWORD", "SECRET", "FERNET", "JWT", "TOKEN")

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}")


# ---------------------------------------------------------------------------------------------- helpers


def pins() -> dict[str, Requirement]:
    """pyproject.toml's dependencies by (lower-case) name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(d).name.lower(): Requirement(d) for d in project["dependencies"]}


def pinned_version(name: str) -> str:
    """The exact version pyproject pins `name` to (`==X`); fails if it is not pinned exactly."""
    spec = list(pins()[name].specifier)
    exact = [s.version for s in spec if s.operator == "=="]
    assert len(exact) == 1, f"pyproject.toml does not pin {name} exactly: {pins()[name]}"
    return exact[0]


def env_example() -> dict[str, str]:
    """KEY=value lines of docker/.env.example (commented lines are documentation only)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{ENV_EXAMPLE.name}: not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${V}, ${V:-default}, ${V-default}, ${V:?error}, and $$ for a literal $."""

    def sub(m: re.Match) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if value is None or (op == ":?" and not value):
            raise KeyError(f"compose needs ${{{name}}} ({arg or 'no default'})")
        return value

    placeholder = "\x00"
    return _VAR.sub(sub, text.replace("$$", placeholder)).replace(placeholder, "$")


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as compose would see it with `--env-file docker/.env.example` (or `env`)."""
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env_example() if env is None else env))


def raw_compose() -> dict[str, Any]:
    """compose.yaml with the ${...} left as written."""
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return " ".join(str(c) for c in cmd) if isinstance(cmd, list) else str(cmd)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_args() -> dict[str, str]:
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip().strip('"')
    return args


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S+)", rest):
                env[key] = value.strip('"')
    return env


def mount(spec: Any) -> tuple[str, str]:
    """(source, target) of a short-syntax volume, the source possibly a ${VAR:-default}."""
    m = re.match(r"(\$\{[^}]*\}|[^:]+):([^:]+)", str(spec))
    assert m, f"not SOURCE:TARGET[:MODE]: {spec!r}"
    return m.group(1), m.group(2)


def created_databases() -> set[str]:
    names: set[str] = set()
    for path in sorted(INIT_DIR.glob("*.sql")):
        sql = re.sub(r"--[^\n]*", "", path.read_text())
        names |= {m.lower() for m in re.findall(r"CREATE\s+DATABASE\s+\"?([A-Za-z_][A-Za-z0-9_]*)\"?", sql, re.I)}
    return names


def postgres_urls(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, url) of every URL pointing at the postgres service, in environments and commands."""
    found = []
    for name, svc in doc["services"].items():
        texts = [(f"{name}.environment.{k}", v) for k, v in environment(svc).items()]
        texts.append((f"{name}.command", command(svc)))
        for where, text in texts:
            for url in re.findall(r"[a-z][a-z0-9+]*://[^\s\"']+", text):
                if urlsplit(url.removeprefix("db+")).hostname == "postgres":
                    found.append((where, url))
    return found


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script or RUN line as word lists (heredoc bodies and comments dropped)."""
    script = re.sub(r"<<-?\s*'?(\w+)'?([^\n]*)\n.*?\n\s*\1[ \t]*(?=\n|$)", r"\2", script, flags=re.S)
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|", "&"):
                if words:
                    commands.append(words)
                words = []
            else:
                words.append(token)
    return commands


def operands(words: list[str]) -> list[str]:
    return [w for w in words[1:] if not w.startswith("-")]


def chown_targets(commands: list[list[str]], owners: set[str]) -> list[str]:
    """Paths a `chown -R OWNER[:GROUP] ...` gives to one of `owners`."""
    paths = []
    for words in commands:
        args = operands(words)
        recursive = any(w.startswith("-") and not w.startswith("--") and "R" in w for w in words[1:])
        if words[0] == "chown" and recursive and args and args[0].split(":")[0] in owners:
            paths += args[1:]
    return paths


def mkdir_targets(commands: list[list[str]]) -> list[str]:
    return [p for words in commands if words[0] == "mkdir" and "-p" in words for p in operands(words)]


def covered(path: str, roots: list[str]) -> bool:
    """`path` is one of `roots` or inside one of them."""
    return any(path == r.rstrip("/") or path.startswith(r.rstrip("/") + "/") for r in roots)


def runtime_owners() -> set[str]:
    """The user the image ends as: its name and the uid it is created with."""
    user = [rest for word, rest in dockerfile_instructions() if word == "USER"][-1]
    return {user, dockerfile_args()["RECVAE_UID"]}


def named_volume_mounts(names: tuple[str, ...]) -> list[tuple[str, str, bool]]:
    """(service, target, read_only) of every named-volume mount of the services `names`."""
    doc = raw_compose()
    declared = set(doc.get("volumes") or {})
    found = []
    for name in names:
        for vol in doc["services"][name].get("volumes") or []:
            source, target = mount(vol)
            default = _VAR.fullmatch(source)
            if (default.group("arg") if default else source) in declared:
                found.append((name, target, str(vol).endswith(":ro")))
    return found


def host_ip(port: Any) -> str | None:
    """The host address a `ports:` entry publishes on (None: every interface)."""
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = str(port).rsplit(":", 2)
    return parts[0] if len(parts) == 3 else None


def published_ports(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(name, port) for name, svc in doc["services"].items() for port in svc.get("ports") or []]


def documented_commands(path: Path) -> list[str]:
    """Commands in the fenced code blocks of a Markdown file, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


# ---------------------------------------------------------------------------------------------- files


def test_files_exist():
    for path in (COMPOSE, DOCKERFILE, ENV_EXAMPLE, DOCKER / "README.md", DOCKER / "Dockerfile.dockerignore"):
        assert path.is_file(), f"missing {path.relative_to(REPO)}"
    assert list(INIT_DIR.glob("*.sql")), "no PostgreSQL init script in docker/postgres-init/"


def test_compose_resolves_with_the_example_env_and_refuses_without_secrets():
    doc = compose()
    assert set(EXPECTED_SERVICES) <= set(doc["services"]), sorted(doc["services"])
    without_password = {k: v for k, v in env_example().items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        compose(without_password)


# ---------------------------------------------------------------------------------------------- versions


def test_dockerfile_versions_match_pyproject_pins():
    args = dockerfile_args()
    assert args["AIRFLOW_VERSION"] == pinned_version("apache-airflow")
    assert args["MLFLOW_VERSION"] == pinned_version("mlflow")
    assert Version(args["TORCH_VERSION"]) in pins()["torch"].specifier, (args["TORCH_VERSION"], pins()["torch"])
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu"), "the default image must use the CPU torch build"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(args["PYTHON_VERSION"] + ".0") in SpecifierSet(requires), (args["PYTHON_VERSION"], requires)


def test_compose_build_args_match_pyproject_pins():
    doc = compose()
    for name in [n for n, svc in doc["services"].items() if "build" in svc]:
        build = doc["services"][name]["build"]
        assert build["args"]["AIRFLOW_VERSION"] == pinned_version("apache-airflow"), name
        assert build["args"]["MLFLOW_VERSION"] == pinned_version("mlflow"), name
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), name


def test_dockerfile_pins_are_installed_and_checked():
    runs = " ".join(rest for word, rest in dockerfile_instructions() if word == "RUN")
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in runs
    assert '"mlflow==${MLFLOW_VERSION}"' in runs
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in runs
    assert runs.index("torch==") < runs.index("pip install ."), "torch must be installed before the project"


# ---------------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_user_and_layout():
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms == ["python:${PYTHON_VERSION}-slim"] and dockerfile_args()["PYTHON_VERSION"] == "3.11"
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must end as a non-root user"

    workdir = next(rest for word, rest in instructions if word == "WORKDIR")
    copies = {}
    for word, rest in instructions:
        if word == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            for src in parts[:-1]:
                copies[src.rstrip("/")] = str(Path(workdir) / parts[-1])
    assert {"pyproject.toml", "recvae", "dags"} <= set(copies), copies
    env = dockerfile_env()
    assert env["AIRFLOW_HOME"].startswith("/")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == copies["dags"].rstrip("/"), "DAGs folder must be where dags/ is copied"
    assert "RECVAE_SQL_DIR" not in env and "sql" not in copies, "the SQL files are package data: installed with recvae"
    runs = [rest for word, rest in instructions if word == "RUN"]
    install = next(i for i, r in enumerate(runs) if "pip install ." in r)
    copy_order = [rest for word, rest in instructions if word in ("COPY", "RUN")]
    assert any("recvae/" in c for c in copy_order[: copy_order.index(runs[install])]), "recvae/ copied before install"


def test_dockerignore_keeps_what_the_dockerfile_copies():
    lines = [ln.strip() for ln in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "**", "exclude everything (.venv is ~2 GB) and allow-list what the image needs"
    for word, rest in dockerfile_instructions():
        if word == "COPY":
            for src in [p for p in rest.split() if not p.startswith("--")][:-1]:
                assert f"!{src}" in lines, f"COPY {src} is excluded by Dockerfile.dockerignore"
                assert (REPO / src).exists(), f"COPY {src}: not in the repository"


# ---------------------------------------------------------------------------------------------- compose


def test_every_service_has_an_image_and_the_right_command():
    doc = compose()
    services = doc["services"]
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    expected = {
        "airflow-init": "airflow db migrate",
        "airflow-api-server": "airflow api-server",
        "airflow-scheduler": "airflow scheduler",
        "airflow-dag-processor": "airflow dag-processor",
        "airflow-triggerer": "airflow triggerer",
        "airflow-worker": "airflow celery worker",
        "mlflow": "mlflow server",
    }
    for name, cmd in expected.items():
        assert cmd in command(services[name]), f"{name}: {command(services[name])!r} does not run {cmd!r}"
    assert "webserver" not in COMPOSE.read_text(), "Airflow 3 has no webserver: use api-server"


def test_profiles_make_celery_optional():
    services = compose()["services"]
    for name, svc in services.items():
        if name in CELERY_ONLY:
            assert svc.get("profiles") == ["celery"], name
        else:
            assert not svc.get("profiles"), f"{name} must start without a profile"


def test_airflow_environment():
    services = compose()["services"]
    shared_keys = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                   "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTOR",
                   "AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
    first = environment(services[AIRFLOW_SERVICES[0]])
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        for key in (*shared_keys, "AIRFLOW_CONN_RECVAE_DB", "MLFLOW_TRACKING_URI",
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"):
            assert env.get(key), f"{name} lacks {key}"
        for key in shared_keys:  # tokens signed by one component are verified by another
            assert env[key] == first[key], f"{name}: {key} differs from {AIRFLOW_SERVICES[0]}"
    env = first
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg_async://")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"

    execution = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution.hostname == "airflow-api-server" and execution.path == "/execution/"
    published = services["airflow-api-server"]["ports"][0]
    assert str(published).endswith(f":{execution.port}"), (published, execution.port)

    tracking = urlsplit(env["MLFLOW_TRACKING_URI"])
    assert tracking.hostname == "mlflow" and tracking.hostname in services
    assert str(services["mlflow"]["ports"][0]).endswith(f":{tracking.port}")
    mlflow_hosts = environment(services["mlflow"])["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert f"{tracking.hostname}:{tracking.port}" in mlflow_hosts, "MLflow would refuse the Airflow containers"

    conn = urlsplit(env["AIRFLOW_CONN_RECVAE_DB"])
    assert conn.scheme in ("postgres", "postgresql") and conn.path == "/recvae"


def test_mlflow_server_settings():
    svc = compose()["services"]["mlflow"]
    cmd = [str(c) for c in svc["command"]]
    opt = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert opt["--backend-store-uri"].startswith("postgresql+psycopg://")
    assert opt["--workers"] == "1"
    assert opt["--host"] == "0.0.0.0"
    mounts = {mount(v)[1] for v in svc["volumes"]}
    assert opt["--artifacts-destination"] in mounts, "artifacts must live on a volume"
    assert environment(svc)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_volumes_are_declared_and_used():
    doc = raw_compose()
    declared = set(doc.get("volumes") or {})
    used = set()
    for name, svc in doc["services"].items():
        for vol in svc.get("volumes") or []:
            source = mount(vol)[0]
            default = _VAR.fullmatch(source)
            if default:  # ${VAR:-named-volume}
                source = default.group("arg")
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"
                used.add(source)
    assert declared == used, f"declared but unused: {sorted(declared - used)}"
    services = compose()["services"]
    pg_mounts = {mount(v)[1]: mount(v)[0] for v in services["postgres"]["volumes"]}
    assert pg_mounts["/var/lib/postgresql/data"] in declared
    assert (COMPOSE.parent / pg_mounts["/docker-entrypoint-initdb.d"]).resolve() == INIT_DIR.resolve()
    for name in AIRFLOW_SERVICES:
        mounts = {mount(v)[1] for v in services[name]["volumes"]}
        assert {"/opt/airflow/logs", "/opt/recvae/home"} <= mounts, name


def test_healthchecks_and_dependency_conditions():
    services = compose()["services"]
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        if name not in ONE_SHOT:
            test = (svc.get("healthcheck") or {}).get("test")
            assert test and test != ["NONE"], f"{name} has no healthcheck"
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use conditions, not a list"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec.get("condition") in allowed, f"{name} -> {dep}: condition {spec.get('condition')!r}"
            if spec["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no check"
            if spec["condition"] == "service_completed_successfully":
                assert dep in ONE_SHOT, f"{dep} is long-running; it never completes"
            if dep in CELERY_ONLY and name not in CELERY_ONLY:
                assert spec.get("required") is False, f"{name} must start without the celery profile"
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        if name not in ONE_SHOT:
            assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["airflow-scheduler"]["depends_on"]["airflow-api-server"]["condition"] == "service_healthy"


# ---------------------------------------------------------------------------------------------- env and secrets


def test_every_variable_has_a_default_or_an_example_entry():
    example = env_example()
    text = COMPOSE.read_text().replace("$$", "")
    used = set()
    for m in _VAR.finditer(text):
        used.add(m.group("name"))
        if m.group("op") in (":-", "-"):
            continue
        assert m.group("name") in example, f"${{{m.group('name')}}} has no default and no line in .env.example"
    bare = re.findall(r"\$(?!\{)([A-Za-z_][A-Za-z0-9_]*)", text)
    assert not bare, f"use ${{VAR}} (or $$ for the container's shell): {bare}"
    stale = {k for k in example if k not in used and not k.startswith("COMPOSE_")}
    assert not stale, f".env.example documents variables compose does not use: {sorted(stale)}"


def test_example_defaults_match_compose_defaults():
    example = env_example()
    for m in _VAR.finditer(COMPOSE.read_text()):
        if m.group("op") == ":-" and m.group("name") in example:
            assert example[m.group("name")] == m.group("arg"), (
                f"{m.group('name')}: .env.example says {example[m.group('name')]!r}, compose defaults to "
                f"{m.group('arg')!r}"
            )


def test_no_plaintext_secrets():
    raw = raw_compose()
    for name, svc in raw["services"].items():
        for key, value in environment(svc).items():
            if any(w in key.upper() for w in SECRET_WORDS) and not key.endswith("_FILE"):
                assert "${" in value, f"{name}.{key} is a literal: take it from docker/.env"
        texts = [*environment(svc).values(), command(svc)]
        for text in texts:
            for url in re.findall(r"[a-z][a-z0-9+]*://[^\s\"']+", text):
                password = urlsplit(url.removeprefix("db+")).password
                if password is not None:
                    assert password.startswith("${") and ":-" not in password, f"{name}: password in {url}"
    example = env_example()
    secrets = {k for k in example if any(w in k for w in SECRET_WORDS)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY"} <= secrets
    for key in secrets:
        assert re.search(rf"\${{{key}:\?", COMPOSE.read_text()), f"{key} must be required (${{{key}:?...}})"
    for key in dockerfile_env():
        assert not any(w in key for w in SECRET_WORDS), f"Dockerfile bakes {key} into the image"
    assert (DOCKER / ".gitignore").read_text().split().count(".env") == 1, "docker/.env must be git-ignored"


def test_example_fernet_key_is_valid():
    from cryptography.fernet import Fernet

    Fernet(env_example()["AIRFLOW_FERNET_KEY"].encode())  # raises on a malformed key


# ---------------------------------------------------------------------------------------------- databases


def test_init_script_creates_every_database_the_services_use():
    doc = compose()
    created = created_databases() | {environment(doc["services"]["postgres"]).get("POSTGRES_DB", "postgres")}
    urls = postgres_urls(doc)
    dbs = {urlsplit(url.removeprefix("db+")).path.lstrip("/") for _, url in urls}
    assert {"airflow", "recvae", "mlflow"} <= dbs, dbs
    for where, url in urls:
        parts = urlsplit(url.removeprefix("db+"))
        assert parts.path.lstrip("/") in created, f"{where} uses database {parts.path!r}; init creates {created}"
        assert parts.username == environment(doc["services"]["postgres"])["POSTGRES_USER"], where
        assert parts.password == environment(doc["services"]["postgres"])["POSTGRES_PASSWORD"], where
        assert parts.port in (None, 5432), where
    healthcheck = " ".join(doc["services"]["postgres"]["healthcheck"]["test"])
    assert "127.0.0.1" in healthcheck, "check over TCP: the init-time server listens on the socket only"


# ---------------------------------------------------------------------------------------------- volume ownership


def test_image_creates_every_mount_point_owned_by_the_runtime_user():
    # A new named volume starts as a copy of the image's directory (content, owner, mode): one the image lacks
    # comes up root-owned and the uid-50000 containers cannot write their task and DAG-processor logs.
    instructions = dockerfile_instructions()
    last_user = max(i for i, (word, _) in enumerate(instructions) if word == "USER")
    commands = [c for word, rest in instructions[:last_user] if word == "RUN" for c in shell_commands(rest)]
    mounts = named_volume_mounts(RECVAE_SERVICES)
    assert "/opt/airflow/logs" in {target for _, target, _ in mounts}
    for name, target, _ in mounts:
        made = [i for i, c in enumerate(commands) if target in mkdir_targets([c])]
        assert made, f"{name} mounts {target}: the Dockerfile never creates it"
        chowned = [i for i, c in enumerate(commands) if covered(target, chown_targets([c], runtime_owners()))]
        assert any(i > made[0] for i in chowned), f"{name} mounts {target}: not then chowned to the runtime user"


def test_airflow_init_hands_the_mounted_dirs_to_the_runtime_user():
    # Volumes made before the image had the directory (or bind mounts in an override) stay root-owned: the init
    # step, as root, creates and chowns them before any long-running container starts, like Airflow's own compose.
    services = compose()["services"]
    init = services["airflow-init"]
    assert str(init.get("user", "")).split(":")[0] in ROOT_USERS, "airflow-init must run as 0:0 to chown"
    commands = shell_commands(str(init["command"][-1]))
    created, owned = mkdir_targets(commands), chown_targets(commands, runtime_owners())
    writable = {target for name, target, ro in named_volume_mounts(AIRFLOW_SERVICES) if not ro}
    assert {"/opt/airflow/logs", "/opt/airflow/auth"} <= writable
    init_mounts = {mount(v)[1] for v in init["volumes"]}
    for target in writable:
        assert target in init_mounts, f"airflow-init does not mount {target}"
        assert target in created, f"airflow-init does not mkdir -p {target}"
        assert covered(target, owned), f"airflow-init does not chown -R {target} to {sorted(runtime_owners())}"
    # Everything written as root (the password file, anything `airflow` creates) is handed over afterwards.
    last_chown = max(i for i, words in enumerate(commands) if words[0] == "chown")
    writers = [i for i, words in enumerate(commands) if words[0] in ("airflow", "python", "python3")]
    assert writers and max(writers) < last_chown, "chown after the commands that write files as root"
    for name in RECVAE_SERVICES:
        if name != "airflow-init":
            assert str(services[name].get("user", "")).split(":")[0] not in ROOT_USERS, f"{name} runs as root"


# ---------------------------------------------------------------------------------------------- ports


def test_published_ports_bind_loopback_unless_opted_in():
    # .env.example ships development secrets: the UIs must not face the network until the operator says so.
    example = env_example()
    assert example.get(BIND_VAR) == "127.0.0.1", f".env.example must document {BIND_VAR}=127.0.0.1"
    unset = {k: v for k, v in example.items() if k != BIND_VAR}
    for env in (example, unset):
        ports = published_ports(compose(env))
        assert {"airflow-api-server", "mlflow", "postgres"} <= {name for name, _ in ports}
        for name, port in ports:
            assert host_ip(port) == "127.0.0.1", f"{name} publishes {port!r} beyond loopback"
    opened = published_ports(compose({**unset, BIND_VAR: "0.0.0.0"}))
    assert {name for name, port in opened if host_ip(port) == "0.0.0.0"} == {"airflow-api-server", "mlflow"}
    assert all(host_ip(port) == "127.0.0.1" for name, port in opened if name == "postgres"), "postgres stays local"
    assert BIND_VAR in (DOCKER / "README.md").read_text(), f"docker/README.md must explain {BIND_VAR}"


# ---------------------------------------------------------------------------------------------- one image


def test_the_project_image_is_built_once_and_reused():
    text = COMPOSE.read_text()
    assert len(re.findall(r"^\s*build:", text, flags=re.M)) == 1, "one build: block in compose.yaml"
    services = compose()["services"]
    builders = [name for name, svc in services.items() if "build" in svc]
    assert builders == [BUILDER], builders
    assert not services[BUILDER].get("profiles"), "the image must be built without a profile"
    image = services[BUILDER]["image"]
    assert image == "recvae:local", image
    for name in RECVAE_SERVICES:
        assert services[name]["image"] == image, f"{name} runs {services[name]['image']!r}, not {image!r}"
        # never pulled: the name is built here, and a registry image of that name is not ours
        assert services[name].get("pull_policy") == "never", name
        if name in AIRFLOW_SERVICES and name != BUILDER:
            assert BUILDER in services[name]["depends_on"], f"`up {name}` must build the image through {BUILDER}"
    assert all(services[n]["image"] != image for n in services if n not in RECVAE_SERVICES)
    renamed = compose({**env_example(), "RECVAE_IMAGE": "registry.example/recvae:1"})["services"]
    assert {renamed[n]["image"] for n in RECVAE_SERVICES} == {"registry.example/recvae:1"}


# ---------------------------------------------------------------------------------------------- docs


def test_documented_mlflow_servers_are_lean():
    # 4 workers and the job runner make `mlflow ui` 15 processes (~3 GB); one worker without it is 2 (~0.6 GB).
    found = []
    for path in DOCS:
        for cmd in documented_commands(path):
            if re.search(r"(^|\s)mlflow (ui|server)\b", cmd):
                found.append((path.name, cmd))
                assert re.search(r"(--workers|-w) 1\b", cmd), f"{path.name}: {cmd!r} lacks --workers 1"
                assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in cmd, f"{path.name}: {cmd!r} runs the job runner"
    assert any(name == "README.md" and " ui " in cmd for name, cmd in found), found


def test_lean_mlflow_flags_exist_in_the_pinned_mlflow():
    import click
    import mlflow
    import mlflow.environment_variables as mlflow_env
    from mlflow.cli import cli

    assert mlflow.__version__ == pinned_version("mlflow")
    assert mlflow_env.MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name == "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
    for command_name in ("ui", "server"):  # `ui` is an alias of `server`
        command_ = cli.get_command(click.Context(cli), command_name)
        assert command_ is not None, command_name
        flags = {opt for param in command_.params for opt in param.opts}
        assert {"--workers", "--backend-store-uri"} <= flags, command_name


# ---------------------------------------------------------------------------------------------- celery profile

# Run in a child process: Airflow reads its configuration once, at import, from the environment the compose file
# gives each container (this test process has its own Airflow configuration).
_AIRFLOW_PROBE = r"""
import json, sys
from airflow.configuration import conf
from airflow.executors.executor_loader import ExecutorLoader

executor = ExecutorLoader.import_default_executor_cls()[0]
out = {"executor": executor.__name__, "module": executor.__module__}
if executor.__name__ == "CeleryExecutor":
    from airflow.providers.celery.executors.celery_executor import app
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=sys.argv[1])
    shard = bag.dags["recvae_score"].get_task("score_shard")  # get_dag would query the metadata DB
    out.update(broker=app.conf.broker_url, backend=app.conf.result_backend,
               visibility=app.conf.broker_transport_options.get("visibility_timeout"),
               import_errors={k: str(v) for k, v in bag.import_errors.items()}, dags=sorted(bag.dag_ids),
               shard_queue=shard.queue, default_queue=conf.get("operators", "default_queue"),
               celery_queue=app.conf.task_default_queue, shard_retries=shard.retries)
print("PROBE" + json.dumps(out))
"""


def airflow_as_in(service: str, env_file: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    """What Airflow's own loaders make of `service`'s environment in compose.yaml (with `env_file` as docker/.env):
    the executor class, and with CeleryExecutor its Celery app's broker and backend and the DagBag of dags/."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(environment(compose(env_file)["services"][service]))
    env.update(AIRFLOW_HOME=str(tmp_path / service), AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"))
    # The metadata DB's host `postgres` exists only inside compose, and parsing DAGs opens it: a local SQLite
    # stands in (what is checked here is the executor, the broker and the result backend, not the metadata DB).
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path / service}.db"
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", None)
    done = subprocess.run([sys.executable, "-c", _AIRFLOW_PROBE, str(REPO / "dags")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("PROBE")][-1]
    return json.loads(line[len("PROBE"):])


def test_default_stack_runs_the_local_executor(tmp_path):
    probe = airflow_as_in("airflow-scheduler", env_example(), tmp_path)
    assert probe["executor"] == "LocalExecutor", probe


@pytest.mark.slow
def test_celery_profile_configures_celery_executor_for_scheduler_and_workers(tmp_path):
    """With AIRFLOW_EXECUTOR=CeleryExecutor (docker/README.md) the scheduler and the workers resolve the Celery
    executor, its broker is the profile's Redis, its results go to the stack's PostgreSQL, and the DAGs load."""
    pytest.importorskip("airflow.providers.celery", reason="pip install -e '.[dev]' (the celery provider)")
    from sqlalchemy.engine import make_url

    env_file = {**env_example(), "AIRFLOW_EXECUTOR": "CeleryExecutor"}
    services = compose(env_file)["services"]
    for name in ("airflow-scheduler", "airflow-worker"):
        probe = airflow_as_in(name, env_file, tmp_path)
        assert probe["module"] == "airflow.providers.celery.executors.celery_executor", (name, probe)
        assert probe["executor"] == "CeleryExecutor"

        broker = urlsplit(probe["broker"])
        assert broker.scheme == "redis" and broker.hostname in services, probe["broker"]
        assert services[broker.hostname].get("profiles") == ["celery"]
        assert broker.port == 6379 and str(broker.port) in map(str, services[broker.hostname]["expose"])

        assert probe["backend"].startswith("db+"), "results in SQL: the stack's PostgreSQL"
        backend = make_url(probe["backend"].removeprefix("db+"))
        assert backend.drivername == "postgresql+psycopg" and backend.host == "postgres"
        assert backend.database == "airflow" and backend.password == env_file["POSTGRES_PASSWORD"]
        # Longer than the longest task (train, 6 h), or the broker hands a running task to a second worker.
        assert int(probe["visibility"]) >= 6 * 3600

        assert not probe["import_errors"], probe["import_errors"]
        assert {"recvae_retrain", "recvae_score"} <= set(probe["dags"])
        # every shard goes to the one queue every worker consumes (the worker command names no other queue)
        assert probe["shard_queue"] == probe["default_queue"] == probe["celery_queue"], probe
        assert probe["shard_retries"] >= 1
    worker = services["airflow-worker"]
    assert "--queues" not in command(worker) and " -q " not in f" {command(worker)} "


def test_celery_profile_starts_two_workers():
    worker = compose()["services"]["airflow-worker"]
    assert int(worker["deploy"]["replicas"]) == 2
    assert env_example()["AIRFLOW_WORKERS"] == "2"
    scaled = compose({**env_example(), "AIRFLOW_WORKERS": "5"})["services"]["airflow-worker"]
    assert int(scaled["deploy"]["replicas"]) == 5
    # a worker's health is its own Celery node answering, one per container
    assert "celery@$${HOSTNAME}" in " ".join(raw_compose()["services"]["airflow-worker"]["healthcheck"]["test"])


def test_celery_pins_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dev = {Requirement(d).name.lower(): Requirement(d) for d in project["optional-dependencies"]["dev"]}
    args = dockerfile_args()
    assert f"=={args['CELERY_PROVIDER_VERSION']}" == str(dev["apache-airflow-providers-celery"].specifier)
    assert f"=={args['CELERY_VERSION']}" == str(dev["celery"].specifier)
    runs = " ".join(rest for word, rest in dockerfile_instructions() if word == "RUN")
    assert '"apache-airflow-providers-celery==${CELERY_PROVIDER_VERSION}"' in runs
    assert '"celery==${CELERY_VERSION}"' in runs
