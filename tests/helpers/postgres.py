"""A throwaway PostgreSQL server for the tests: initdb into a fresh folder, a free port on
127.0.0.1, stopped (and its folder removed) by its owner. Run as the `postgres` user when the
tests run as root (PostgreSQL refuses root). The binaries come from the system's packages
(.ci/run installs them); without them the tests that need a server skip, unless
SEGEXP_REQUIRE_POSTGRES=1 (CI), where they fail."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REQUIRE_ENV = "SEGEXP_REQUIRE_POSTGRES"


def binaries() -> Path | None:
    """The folder of initdb/pg_ctl: Debian's /usr/lib/postgresql/<version>/bin, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """A running server: `url(db)` is a SQLAlchemy URL of database `db` on it."""

    folder: Path
    port: int
    bin_dir: Path
    user: str = "segexp"
    password: str | None = None  # None: trust authentication, no password

    def url(self, database: str, with_password: bool = True) -> str:
        secret = f":{self.password}" if self.password and with_password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, command: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return command

    def run(self, *command: str) -> subprocess.CompletedProcess:
        env = {**os.environ, **({"PGPASSWORD": self.password} if self.password else {})}
        return subprocess.run(self._as_owner(list(command)), capture_output=True, text=True,
                              timeout=120, check=True, cwd=self.folder, env=env)  # fmt: skip

    def dump(self, database: str) -> str:
        """The whole database as SQL (pg_dump): every table's rows."""
        return self.run(str(self.bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", self.user, database).stdout  # fmt: skip

    def start(self) -> None:
        data = self.folder / "data"
        self.run(
            str(self.bin_dir / "pg_ctl"), "start", "-w", "-D", str(data), "-l",
            str(self.folder / "server.log"), "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off",
        )  # fmt: skip

    def stop(self) -> None:
        self.run(str(self.bin_dir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D",
                 str(self.folder / "data"))  # fmt: skip

    def create_database(self, name: str) -> str:
        self.run(str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", self.user, name)  # fmt: skip
        return self.url(name)


def start_server(password: str | None = None) -> Server:
    """initdb (superuser `segexp`; trust authentication on 127.0.0.1, or scram-sha-256 with
    `password`) and start a server."""
    bin_dir = binaries()
    assert bin_dir is not None, "no PostgreSQL binaries (initdb)"
    folder = Path(tempfile.mkdtemp(prefix="segexp-pg-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
    server = Server(folder, free_port(), bin_dir, password=password)
    auth = ["--auth=trust"]
    if password:
        (folder / "pwfile").write_text(password + "\n")
        (folder / "pwfile").chmod(0o644)
        auth = ["--auth=scram-sha-256", f"--pwfile={folder / 'pwfile'}"]
    server.run(str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", server.user, *auth,
               "-E", "UTF8", "--no-sync")  # fmt: skip
    if password:
        (folder / "pwfile").unlink()
    for attempt in range(3):  # the free port may be taken between probe and start
        try:
            server.start()
            return server
        except subprocess.CalledProcessError:
            if attempt == 2:
                raise
            server.port = free_port()
            time.sleep(1)
    return server


def remove(server: Server) -> None:
    """Stop the server (if it runs) and delete its folder."""
    with contextlib.suppress(subprocess.CalledProcessError):
        server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)
