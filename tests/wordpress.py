"""WordPress from Debian's packages, installed for a test and served on loopback.

    with wordpress_site(tmp_path) as site:
        site.install_plugin(plugin_zip)                  # as an upload would unpack it
        site.php("echo get_option('siteurl');")          # code run inside WordPress (CLI)
        page.goto(f"{site.url}/wp-admin/")               # PHP's built-in server

Debian's ``wordpress`` package puts WordPress in /usr/share/wordpress with a
``wp-config.php`` that reads /etc/wordpress. A test site is a copy of that tree (hard
links where the disk allows) with a ``wp-config.php`` of its own: its own MariaDB
database on the machine's server (root, no password), dropped afterwards, its own
``wp-content``, WP_DEBUG on with a log of its own. It is installed by ``wp_install()``
run from PHP's command line (no web installer), and served by ``php -S`` with a router
like WP-CLI's. ``make wordpress`` installs the packages; without them this fails, never
skips.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from servers import free_port, wait_for

WORDPRESS = Path("/usr/share/wordpress")
BUILD = Path(__file__).resolve().parent.parent / "integrations" / "wordpress" / "build.py"
THEME = "twentytwentythree"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct horse battery staple"
MARIADB = ("mysql", "--host=127.0.0.1", "--port=3306", "--user=root")

# php -S: files are served as they are, PHP files run, everything else is WordPress's.
ROUTER = """<?php
$root = $_SERVER['DOCUMENT_ROOT'];
$path = '/' . ltrim( urldecode( parse_url( $_SERVER['REQUEST_URI'], PHP_URL_PATH ) ), '/' );
if ( file_exists( $root . $path ) ) {
	if ( is_dir( $root . $path ) && substr( $path, -1 ) !== '/' ) {
		header( "Location: $path/" );
		exit;
	}
	if ( substr( $path, -4 ) === '.php' ) {
		chdir( dirname( $root . $path ) );
		require $root . $path;
		return;
	}
	return false;
}
chdir( $root );
require 'index.php';
"""


def build_plugin(output: Path) -> Path:
    """The plugin's zip, as `make wordpress-plugin` builds it, in ``output``."""
    done = subprocess.run(
        [sys.executable, str(BUILD), "zip", "--output", str(output)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def require_wordpress() -> None:
    """Fails (never skips) when the machine lacks what `make wordpress` installs."""
    missing = [
        what
        for what, there in (
            ("Debian's wordpress package", (WORDPRESS / "wp-settings.php").is_file()),
            (f"the {THEME} theme", (WORDPRESS / "wp-content" / "themes" / THEME).is_dir()),
            ("wordpress-l10n", (WORDPRESS / "wp-content" / "languages" / "fr_FR.mo").is_file()),
            ("php", shutil.which("php") is not None),
            ("the mysql client", shutil.which("mysql") is not None),
        )
        if not there
    ]
    assert not missing, f"missing {', '.join(missing)}: run `make wordpress`"


@dataclass
class WordPressSite:
    root: Path
    url: str
    debug_log: Path
    server_log: Path

    @property
    def origin(self) -> str:
        return self.url

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def php(self, code: str, data: Any = None, timeout: float = 60) -> str:
        """Runs PHP ``code`` inside this WordPress (its admin functions loaded) and returns
        what it printed; fails on a non-zero exit. ``data`` reaches the code as
        ``$data``, through JSON (no quoting of PHP literals)."""
        script = self.root.parent / f"cli-{secrets.token_hex(4)}.php"
        script.write_text(
            "<?php\n"
            f"$_SERVER['HTTP_HOST'] = '{self.host}';\n"
            "$_SERVER['REQUEST_URI'] = '/';\n"
            f"require '{self.root}/wp-load.php';\n"
            "require_once ABSPATH . 'wp-admin/includes/admin.php';\n"
            "$data = json_decode( getenv( 'SMI_TEST_DATA' ), true );\n" + code
        )
        try:
            done = subprocess.run(
                ["php", str(script)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "SMI_TEST_DATA": json.dumps(data)},
            )
        finally:
            script.unlink()
        assert done.returncode == 0, (
            f"php failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def php_json(self, code: str, data: Any = None) -> Any:
        """Runs ``code``, which prints one JSON value, and returns it decoded."""
        return json.loads(self.php(code, data))

    def install_plugin(self, archive: Path) -> None:
        """Unpacks a plugin's zip into wp-content/plugins, as an upload does."""
        with zipfile.ZipFile(archive) as plugin:
            plugin.extractall(self.root / "wp-content" / "plugins")

    def add_image(self, name: str, data: bytes, alt: str) -> dict[str, Any]:
        """Adds an image to the media library; its id and address."""
        source = self.root.parent / name
        source.write_bytes(data)
        return dict(
            self.php_json(
                """
                $upload = wp_upload_bits( $data['name'], null, file_get_contents( $data['file'] ) );
                if ( $upload['error'] ) { fwrite( STDERR, $upload['error'] ); exit( 1 ); }
                $id = wp_insert_attachment(
                    array( 'post_mime_type' => 'image/png', 'post_title' => $data['alt'],
                           'post_status' => 'inherit' ),
                    $upload['file']
                );
                wp_update_attachment_metadata(
                    $id, wp_generate_attachment_metadata( $id, $upload['file'] ) );
                update_post_meta( $id, '_wp_attachment_image_alt', $data['alt'] );
                echo wp_json_encode( array( 'id' => $id, 'url' => $upload['url'] ) );
                """,
                {"name": name, "file": str(source), "alt": alt},
            )
        )

    def debug_lines(self) -> list[str]:
        """What PHP logged under WP_DEBUG (warnings, notices, deprecations)."""
        if not self.debug_log.exists():
            return []
        return [line for line in self.debug_log.read_text(errors="replace").splitlines() if line]


def _link_or_copy(source: str, target: str) -> None:
    # Debian's tree holds relative symbolic links (to /usr/share/javascript, getid3, and
    # /etc): what they point at is copied, so it works in the copy and nothing the site
    # writes reaches /etc. WordPress's own files are hard links where the disk allows.
    real = os.path.realpath(source)
    if not real.startswith(f"{WORDPRESS}/"):
        shutil.copy2(real, target)
        return
    try:
        os.link(real, target)
    except OSError:
        shutil.copy2(real, target)


def _mariadb(statement: str) -> None:
    done = subprocess.run([*MARIADB, "-e", statement], capture_output=True, text=True)
    assert done.returncode == 0, f"MariaDB at 127.0.0.1:3306 refused {statement!r}: {done.stderr}"


def _config(database: str, url: str, debug_log: Path) -> str:
    keys = "".join(
        f"define( '{name}', '{secrets.token_hex(32)}' );\n"
        for name in (
            "AUTH_KEY",
            "SECURE_AUTH_KEY",
            "LOGGED_IN_KEY",
            "NONCE_KEY",
            "AUTH_SALT",
            "SECURE_AUTH_SALT",
            "LOGGED_IN_SALT",
            "NONCE_SALT",
        )
    )
    return (
        "<?php\n"
        + textwrap.dedent(
            f"""\
            define( 'DB_NAME', '{database}' );
            define( 'DB_USER', 'root' );
            define( 'DB_PASSWORD', '' );
            define( 'DB_HOST', '127.0.0.1:3306' );
            define( 'DB_CHARSET', 'utf8mb4' );
            define( 'DB_COLLATE', '' );
            $table_prefix = 'wp_';
            define( 'WP_HOME', '{url}' );
            define( 'WP_SITEURL', '{url}' );
            define( 'WP_DEBUG', true );
            define( 'WP_DEBUG_LOG', '{debug_log}' );
            define( 'WP_DEBUG_DISPLAY', false );
            define( 'DISABLE_WP_CRON', true );
            define( 'AUTOMATIC_UPDATER_DISABLED', true );
            define( 'WP_AUTO_UPDATE_CORE', false );
            define( 'FS_METHOD', 'direct' );
            // No internet here: WordPress's own calls home fail at once instead of timing
            // out; this host (the gateway on another port) stays reachable.
            define( 'WP_HTTP_BLOCK_EXTERNAL', true );
            """
        )
        + keys
        + "if ( ! defined( 'ABSPATH' ) ) {\n\tdefine( 'ABSPATH', __DIR__ . '/' );\n}\n"
        + "require_once ABSPATH . 'wp-settings.php';\n"
    )


@contextmanager
def wordpress_site(tmp: Path, port: int | None = None) -> Iterator[WordPressSite]:
    """A new WordPress on its own database, installed and served on 127.0.0.1:``port``."""
    require_wordpress()
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    base = tmp / "wordpress"
    root = base / "site"
    base.mkdir(parents=True)
    # .htaccess is Apache's (a link to /etc/wordpress/htaccess); php -S has none.
    shutil.copytree(
        WORDPRESS, root, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".htaccess")
    )
    (root / "wp-config.php").unlink()
    (root / "wp-content" / "uploads").mkdir(exist_ok=True)
    database = f"smi_wp_{secrets.token_hex(6)}"
    site = WordPressSite(root, url, base / "debug.log", base / "server.log")
    (root / "wp-config.php").write_text(_config(database, url, site.debug_log))
    _mariadb(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    server = None
    try:
        install = root.parent / "install.php"
        install.write_text(
            "<?php\n"
            "define( 'WP_INSTALLING', true );\n"
            f"$_SERVER['HTTP_HOST'] = '127.0.0.1:{port}';\n"
            f"require '{root}/wp-load.php';\n"
            "require_once ABSPATH . 'wp-admin/includes/upgrade.php';\n"
            "$done = wp_install( 'A photographer', "
            f"'{ADMIN_USER}', 'admin@example.com', true, '', wp_slash( '{ADMIN_PASSWORD}' ) );\n"
            "echo $done['user_id'];\n"
        )
        done = subprocess.run(["php", str(install)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "1", done.stdout + done.stderr
        router = base / "router.php"
        router.write_text(ROUTER)
        server = subprocess.Popen(
            ["php", "-S", f"127.0.0.1:{port}", "-t", str(root), str(router)],
            stdout=site.server_log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=root,
            # Browsers load a page's files side by side; one PHP process would queue them.
            env={**os.environ, "PHP_CLI_SERVER_WORKERS": "4"},
            start_new_session=True,
        )
        wait_for(lambda: _answers(url), timeout=30, interval=0.1)
        yield site
    finally:
        if server is not None:
            # The workers are the server's children: stop the whole group.
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        _mariadb(f"DROP DATABASE IF EXISTS `{database}`")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/wp-login.php", timeout=5).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.1)
        return False
