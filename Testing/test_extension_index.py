"""The Slicer Extensions Index validator (copy in ../shared/tools/extensions_index) run offline on this checkout.

The validator clones `scm_url`, downloads the schema and the icon/screenshot URLs, and asks GitHub for the
repository's topics. Here its clone step clones a local snapshot of the checkout, a stand-in for `requests` serves
the schema from the local copy and the repository's raw URLs from the clone, and the topics check (GitHub API) and
the dependency check (needs the index's other description files) are left out.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
import urllib.parse
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, SHARED_DATA

VALIDATOR = SHARED_DATA.parent / "tools" / "extensions_index" / "check_description_files.py"
DESCRIPTION = PROJECT_ROOT / "DPETResponse.json"
SCHEMA_URL_PREFIX = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
#: The validator's checks that run offline, in the order of its main().
OFFLINE_CHECKS = ("check_repository_size", "check_json_schema", "check_json_file_format", "check_extension_name",
                  "check_category", "check_git_repository_name", "check_scm_url_syntax", "check_cmakelists_content",
                  "check_license_file")
HAVE_JSONSCHEMA = importlib.util.find_spec("jsonschema") is not None
needs_jsonschema = pytest.mark.skipif(not HAVE_JSONSCHEMA, reason="jsonschema is not installed: the validator's "
                                      "schema check needs it (pyproject's test extra should list it)")
IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


def git(cwd, *args):
    """Run git with no GIT_* variables inherited (a hook's GIT_DIR or GIT_INDEX_FILE would point elsewhere)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def validator():
    """check_description_files.py as a module. On Python < 3.12 its print_categories (an index helper, not a check)
    is blanked out: its f-string syntax is new in 3.12 and the module would not compile."""
    if not VALIDATOR.is_file():
        pytest.fail(f"Extensions Index validator not found at {VALIDATOR} (expected ../shared beside the checkout)")
    source = VALIDATOR.read_text(encoding="utf-8")
    if sys.version_info < (3, 12):
        start = source.index("\ndef print_categories(")
        end = source.index("\ndef ", start + 1)
        source = source[:start] + "\n" * source.count("\n", start, end) + source[end:]  # line numbers kept
    module = types.ModuleType("check_description_files")
    module.__file__ = str(VALIDATOR)
    exec(compile(source, str(VALIDATOR), "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def clone(validator, tmp_path_factory):
    """The validator's clone of the checkout as it is on disk. A clone of PROJECT_ROOT itself would miss uncommitted
    work, so the files git would commit (tracked and untracked-not-ignored, as on disk) go into a one-commit repository
    on `main`, which the validator clones and checks out as it would `scm_url` at `scm_revision`. On a clean CI clone
    that is exactly the committed tree."""
    root = tmp_path_factory.mktemp("extension_index")
    origin, cloned = root / "origin", root / "clone"
    listed = git(PROJECT_ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").decode().split("\0")
    for relative in filter(None, listed):
        source = PROJECT_ROOT / relative
        if source.is_file():  # a tracked file deleted in the working tree is not committed
            (origin / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, origin / relative)
    git(origin, "init", "-q", "--template=", "-b", "main")
    git(origin, "add", "--all", "--force", ".")
    git(origin, "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false",
        "-c", "core.hooksPath=/dev/null", "commit", "-q", "-m", "snapshot")
    metadata = {**json.loads(DESCRIPTION.read_text()), "scm_url": str(origin), "scm_revision": "main"}
    validator.check_clone_repository(DESCRIPTION.stem, metadata, cloned_repository_folder=str(cloned))
    return cloned


class OfflineRequests:
    """Stands in for the validator's `requests`: the schema from the local copy, `scm_url`'s raw file URLs at
    `scm_revision` from the clone (with the Content-Type a server gives them); any other address is unreachable."""

    class RequestException(Exception):
        pass

    def __init__(self, metadata, clone):
        self.clone = Path(clone)
        url = urllib.parse.urlsplit(metadata.get("scm_url", ""))
        owner_repo = url.path.strip("/").removesuffix(".git")
        self.raw_prefix = (f"https://raw.githubusercontent.com/{owner_repo}/{metadata.get('scm_revision', 'main')}/"
                           if url.netloc == "github.com" else None)

    def get(self, url, timeout=None, headers=None):
        if url.startswith(SCHEMA_URL_PREFIX):
            path = VALIDATOR.parent / url.removeprefix(SCHEMA_URL_PREFIX)
        elif self.raw_prefix and url.startswith(self.raw_prefix):
            path = self.clone / url.removeprefix(self.raw_prefix)
        else:
            raise self.RequestException(f"offline: {url} cannot be reached")
        return _Response(self, path, url)


class _Response:
    def __init__(self, requests, path, url):
        self.requests, self.url = requests, url
        self.content = path.read_bytes() if path.is_file() else b"404: Not Found"
        self.status_code = 200 if path.is_file() else 404
        kind = next((t for magic, t in IMAGE_TYPES.items() if self.content.startswith(magic)), "text/plain")
        self.headers = {"Content-Type": kind}

    def raise_for_status(self):
        if self.status_code != 200:
            raise self.requests.RequestException(f"{self.status_code} Client Error: Not Found for url: {self.url}")

    def json(self):
        return json.loads(self.content)


def run_checks(validator, description, clone, monkeypatch, checks=OFFLINE_CHECKS):
    """Run the checks as the validator's main() does, printing its report; return {check: message} of the failures."""
    name, metadata = Path(description).stem, validator.parse_json(str(description))
    monkeypatch.setattr(validator, "requests", OfflineRequests(metadata, clone))
    kwargs = {"check_json_file_format": {"extension_file_path": str(description)}}
    for check in ("check_repository_size", "check_cmakelists_content", "check_license_file"):
        kwargs[check] = {"cloned_repository_folder": str(clone)}
    failures = {}
    print(f"## Extension: {name}")
    for check in checks:
        try:
            details = getattr(validator, check)(name, metadata, **kwargs.get(check, {}))
        except validator.ExtensionCheckError as exc:
            failures[check] = str(exc)
            print(f"- :x: {check} failed: {exc}")
        else:
            print(f"- :white_check_mark: {check}" + (details or ""))
    return failures


def test_the_checkout_passes_the_offline_checks(validator, clone, monkeypatch):
    checks = [c for c in OFFLINE_CHECKS if c != "check_json_schema"]
    assert run_checks(validator, DESCRIPTION, clone, monkeypatch, checks) == {}


@needs_jsonschema
def test_the_description_file_matches_the_schema(validator, clone, monkeypatch):
    assert run_checks(validator, DESCRIPTION, clone, monkeypatch, ["check_json_schema"]) == {}


def test_description_file_and_cmake_name_the_same_dependencies():
    """The index's checklist: the description file agrees with the top-level CMakeLists.txt."""
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', (PROJECT_ROOT / "CMakeLists.txt").read_text()).group(1)
    assert sorted(json.loads(DESCRIPTION.read_text())["build_dependencies"]) == sorted(depends.split())


def _replace_in_cmake(clone, pattern, replacement):
    path = clone / "CMakeLists.txt"
    path.write_text(re.sub(pattern, replacement, path.read_text()))


def _sparse_file(path, size):
    with open(path, "wb") as f:
        f.truncate(size)


#: Each broken submission: the edit of its description file or clone, and {check that must fail: part of its message}.
BROKEN = {
    "unknown category": (lambda s: s.metadata.update(category="Breast PET"), {"check_category": "is unknown"}),
    "property outside the schema": (lambda s: s.metadata.update(homepage="https://example.org"),
                                    {"check_json_schema": "Additional properties are not allowed"}),
    "tier out of range": (lambda s: s.metadata.update(tier=6), {"check_json_schema": "maximum of 5"}),
    "CRLF line endings": (lambda s: setattr(s, "newline", "\r\n"), {"check_json_file_format": "non-LF"}),
    "unsupported URL scheme": (lambda s: s.metadata.update(scm_url="ftp://example.org/SlicerDPETResponse"),
                               {"check_scm_url_syntax": "scheme is 'ftp'"}),
    "repository not named Slicer*": (lambda s: s.metadata.update(scm_url="https://github.com/DPETResponse/DPETResponse"),
                                     {"check_git_repository_name": "repository name *should* start with 'Slicer'"}),
    "description file named Slicer*": (lambda s: setattr(s, "name", "SlicerDPETResponse"), {
        "check_extension_name": "should not* start with 'Slicer'",
        "check_cmakelists_content": "project name 'DPETResponse' does not match"}),
    "no licence file": (lambda s: (s.clone / "LICENSE").unlink(), {"check_license_file": "No license file"}),
    "icon URL through a CMake variable": (lambda s: _replace_in_cmake(
        s.clone, r'(set\(EXTENSION_ICONURL ")https://[^/]+/', r"\1${_raw_url}/"),
        {"check_cmakelists_content": "should be a valid URL starting with 'http'"}),
    "screenshot missing from the repository": (lambda s: (
        s.clone / "Resources" / "Screenshots" / "DPETResponse-2.png").unlink(),
        {"check_cmakelists_content": "404 Client Error"}),
    "icon URL to a file that is no image": (lambda s: _replace_in_cmake(
        s.clone, r"Resources/Icons/DPETResponse\.png", "README.md"),
        {"check_cmakelists_content": "does not point to a valid image"}),
    "repository over 100 MB": (lambda s: _sparse_file(s.clone / "big.bin", 101 * 2**20),
                               {"check_repository_size": "exceeds the 100 MB limit"}),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=needs_jsonschema) if "check_json_schema" in BROKEN[c][1]
                                  else c for c in BROKEN])
def test_the_validator_reports_a_broken_submission(case, validator, clone, tmp_path, monkeypatch):
    edit, expected = BROKEN[case]
    submission = types.SimpleNamespace(metadata=json.loads(DESCRIPTION.read_text()), name=DESCRIPTION.stem,
                                       newline="\n", clone=tmp_path / "clone")
    shutil.copytree(clone, submission.clone, symlinks=True)
    edit(submission)
    description = tmp_path / f"{submission.name}.json"
    text = (json.dumps(submission.metadata, indent=2) + "\n").replace("\n", submission.newline)
    description.write_bytes(text.encode())
    checks = [c for c in OFFLINE_CHECKS if c != "check_json_schema" or HAVE_JSONSCHEMA]
    failures = run_checks(validator, description, submission.clone, monkeypatch, checks)
    for check, message in expected.items():
        assert message in failures.get(check, ""), failures
