"""The workbench as a user meets it: JupyterLab in headless Chromium, driven by Playwright.

One JupyterLab server (free loopback port, random token, everything it
writes in a temporary directory) serves a copy of
``notebooks/00_start_here.ipynb``. The copy gets a few cells appended, at test
time only, that show the panels the tour does not (every panel of
``sdlab.widgets`` besides its GenerationPanel), so one page load, one kernel
and one Run > Run All Cells cover the tour and all six panels. The tests then
press the panels' buttons, move the DenoiseExplorer's step slider, and save one
screenshot per panel to ``outputs/browser/`` (git-ignored).

Exceptions are looked for on both sides: in the page (error and traceback
outputs), in the notebook as saved through the REST API, and in the kernel
itself (a second client on the kernel's IOPub channel records every ``error``
message and any traceback on stderr, which also catches exceptions raised in
widget callbacks that JupyterLab shows only in its log console; at the end
every panel's ``last_error`` is read from the kernel).

Chromium: Debian's ``/usr/bin/chromium`` (``make test`` installs it through
apt when it is missing; Playwright's own browser download does not work here).
Without it these tests skip, except under CI where they fail.
``SDLAB_BROWSER_TIMEOUT`` (seconds, default 600) bounds each wait; raise it on
a very busy machine.
"""
from __future__ import annotations

import ast
import base64
import copy
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SDLAB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "outputs" / "browser"
TOUR = ROOT / "notebooks" / "00_start_here.ipynb"
NOTEBOOK = f"notebooks/{TOUR.name}"  # the copy's path under the server's root
PANEL_NAMES = ("GenerationPanel", "SweepPanel", "DenoiseExplorer", "WatermarkPanel", "AuditPanel", "CompressionPanel")
WIDGET_VIEW = ".jp-OutputArea-output > .jupyter-widgets"  # a displayed widget's root view
STDERR = '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'
# Generous: a busy CPU (say a model training beside the tests) slows JupyterLab's page load and the kernel a lot.
TIMEOUT_S = float(os.environ.get("SDLAB_BROWSER_TIMEOUT", "600"))
VIEWPORT = {"width": 1600, "height": 1000}


# --------------------------------------------------------------------------------------------------
# the cells appended to the copy of the tour (never committed; they use the tour's `pipe`)
# --------------------------------------------------------------------------------------------------
PANEL_CELLS = [
    ("markdown", "## The other panels\n\nAppended by `tests/browser` for the browser test."),
    ("code", """\
import pandas as pd

from sdlab.images import sample_photos
from sdlab.mini.world import make_dataset
from sdlab.widgets.audit import AuditPanel
from sdlab.widgets.compression import CompressionPanel
from sdlab.widgets.denoise import DenoiseExplorer
from sdlab.widgets.sweep import SweepPanel
from sdlab.widgets.watermark import WatermarkPanel

# the tour's GenerationPanel was the value of a cell, so IPython keeps it in Out
PANELS = {type(v).__name__: v for v in Out.values() if type(v).__name__ == "GenerationPanel"}
pd.DataFrame({
    "URL": ["https://i.pinimg.com/a.jpg", "https://i.pinimg.com/b.jpg", "http://shop.example.com/x.jpg",
            "https://upload.wikimedia.org/c.png", "https://cdn.example.org/d.jpg", "https://i.pinimg.com/e.jpg"],
    "TEXT": ["a nurse and her cat", "red shoes", "a red bike", "a castle at night", "a dog on a beach", "a cake"],
}).to_parquet("audit_sample.parquet")"""),
    ("code", """\
sweep = PANELS["SweepPanel"] = SweepPanel(pipe, out_dir="sweep_store")
sweep.axes[0][1].value, sweep.axes[1][1].value, sweep.steps.value = "1-2", "1,7.5", 8
sweep"""),
    ("code", """\
denoise = PANELS["DenoiseExplorer"] = DenoiseExplorer(pipe)
denoise"""),
    ("code", """\
watermark = PANELS["WatermarkPanel"] = WatermarkPanel(sample_photos(384, ("astronaut",))["astronaut"])
watermark"""),
    ("code", """\
audit = PANELS["AuditPanel"] = AuditPanel("audit_sample.parquet")
audit"""),
    ("code", """\
# 0.8 bits per pixel: JPEG's and WebP's headers alone are over the default budget on a 64x64 image
compression = PANELS["CompressionPanel"] = CompressionPanel(images={f"shapes{i:02d}": im for i, im in enumerate(make_dataset(2, seed=1)[0])}, codecs=("vae", "jpeg", "webp"), vae=pipe.vae, bpp=0.8)
compression"""),
]


def _tour_with_panels() -> dict:
    notebook = json.loads(TOUR.read_text(encoding="utf-8"))
    # before the exercises, which stay last
    at = max(i for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "code") + 1
    extra = []
    for i, (kind, source) in enumerate(PANEL_CELLS):
        cell = {"cell_type": kind, "id": f"browser-test-{i}", "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        extra.append(cell)
    notebook = copy.deepcopy(notebook)
    notebook["cells"][at:at] = extra
    return notebook


# --------------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab: its URL, token, temporary root and REST helpers."""

    def __init__(self, base: str, token: str, root: Path, runtime: Path, log: Path) -> None:
        self.base, self.token, self.root, self.runtime, self.log = base, token, root, runtime, log

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(f"{self.base}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
        return json.loads(body) if body else None

    def url(self, path: str) -> str:
        return f"{self.base}/lab/tree/{path}?token={self.token}"

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        message = f"needs Chromium at {CHROMIUM} (Debian: apt-get install chromium; `make test` installs it when it can)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must have it")
        pytest.skip(message)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    _require_chromium()
    pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install -e '.[dev]')")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # this run's screenshots only
    ARTIFACTS.mkdir(parents=True)
    top = tmp_path_factory.mktemp("lab")
    root, runtime, config, settings, workspaces = (top / d for d in ("root", "runtime", "config", "settings", "workspaces"))
    for d in (root / "notebooks", runtime, config, settings, workspaces):
        d.mkdir(parents=True)
    (root / NOTEBOOK).write_text(json.dumps(_tour_with_panels(), indent=1), encoding="utf-8")
    # lab settings: attach every cell to the DOM (no lazy rendering), no news or update checks over the network
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},
                           "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(workspaces),
           "IPYTHONDIR": str(top / "ipython"), "HF_HUB_OFFLINE": "1",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    jupyter = Path(sys.executable).with_name("jupyter")
    command = [str(jupyter)] if jupyter.exists() else [sys.executable, "-m", "jupyter"]
    command += ["lab", "--no-browser", f"--IdentityProvider.token={token}", f"--port={port}", "--ServerApp.ip=127.0.0.1",
                "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
                "--LabApp.extension_manager=readonly"]
    log = ARTIFACTS / "jupyterlab.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, runtime, log)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n{lab.log_tail()}")
            try:
                lab.api("status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within {TIMEOUT_S:.0f} s:\n{lab.log_tail()}")
                time.sleep(0.5)
        yield lab
    finally:
        server.terminate()  # shuts its kernels down too
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


# --------------------------------------------------------------------------------------------------
# the kernel side
# --------------------------------------------------------------------------------------------------
class KernelWatcher:
    """A second client of the notebook's kernel: records every exception the kernel reports on IOPub."""

    def __init__(self, lab: Lab, kernel_id: str) -> None:
        from jupyter_client import BlockingKernelClient

        self.client = BlockingKernelClient(connection_file=str(lab.runtime / f"kernel-{kernel_id}.json"))
        self.client.load_connection_file()
        self.client.start_channels()
        self.errors: list[str] = []
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        # wait until the IOPub subscription is live: our own request's status messages come back
        deadline = time.monotonic() + 120
        while True:
            msg_id = self.client.kernel_info()
            end = time.monotonic() + 5
            while msg_id not in self._seen and time.monotonic() < end:
                time.sleep(0.05)
            if msg_id in self._seen:
                break
            if time.monotonic() > deadline:
                raise AssertionError("could not subscribe to the kernel's IOPub channel")

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.client.get_iopub_msg(timeout=0.2)
            except Exception:  # queue.Empty
                continue
            parent = msg.get("parent_header", {}).get("msg_id")
            if parent:
                self._seen.add(parent)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "error":
                self.errors.append(f"{content['ename']}: {content['evalue']}\n" + "\n".join(content.get("traceback", [])))
            elif kind == "stream" and content.get("name") == "stderr" and "Traceback" in content.get("text", ""):
                self.errors.append(content["text"])

    def evaluate(self, expression: str) -> str:
        """The repr of ``expression`` evaluated in the kernel (silently: no cell, no history)."""
        msg_id = self.client.execute("", silent=True, user_expressions={"r": expression})
        while True:
            reply = self.client.get_shell_msg(timeout=120)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        result = reply["content"]["user_expressions"]["r"]
        assert result["status"] == "ok", result
        return result["data"]["text/plain"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.client.stop_channels()


# --------------------------------------------------------------------------------------------------
# the page side
# --------------------------------------------------------------------------------------------------
@dataclass
class Session:
    lab: Lab
    page: object
    watcher: KernelWatcher


def _wait(condition, what: str, timeout_s: float = TIMEOUT_S, every: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"gave up after {timeout_s:.0f} s waiting for {what}"
        time.sleep(every)
    return result


def _open_notebook(page, lab: Lab, path: str) -> str:
    """Open ``path`` and wait until its kernel has started and is idle; return the kernel's id."""
    page.goto(lab.url(path), wait_until="domcontentloaded")
    page.locator(".jp-NotebookPanel .jp-Notebook-cell").first.wait_for()

    def idle_kernel():
        kernels = [s["kernel"]["id"] for s in lab.api("sessions") if s["path"] == path and s.get("kernel")]
        return kernels and lab.api(f"kernels/{kernels[0]}")["execution_state"] == "idle" and kernels[0]

    kernel_id = _wait(idle_kernel, f"an idle kernel for {path}")
    page.locator(".jp-NotebookPanel-toolbar .jp-KernelName").filter(has_text="Python").wait_for()
    page.locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()
    page.locator("#jp-left-stack").wait_for()
    page.keyboard.press("Control+b")  # fold the file browser away: more width for the panels
    return kernel_id


def _menu(page, menu: str, command: str) -> None:
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{menu}$")).click()
    page.locator(f'.lm-Menu-item[data-command="{command}"]').click()


def _wait_until_executed(page) -> None:
    """Every code cell shows an execution count ([n]) and the kernel is idle."""
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""", timeout=TIMEOUT_S * 1000, polling=1000)
    page.locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()


def _error_outputs(page) -> list[str]:
    # stderr also carries harmless warnings and progress bars; a traceback or an "...Error:" line is what fails
    return [t for t in page.locator(f".jp-NotebookPanel {STDERR}").all_inner_texts()
            if "Traceback" in t or re.search(r"^\w*(Error|Exception)\b", t, re.MULTILINE)]


def _panel(page, source_text: str):
    """The widget shown by the (one) code cell whose source contains ``source_text``."""
    cell = page.locator(".jp-NotebookPanel .jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=source_text))
    assert cell.count() == 1, f"expected one cell containing {source_text!r}, found {cell.count()}"
    panel = cell.locator(WIDGET_VIEW).first
    panel.wait_for()
    return panel


def _button(panel, label: str):
    return panel.locator("button", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))


def _labelled(page, panel, kind: str, label: str):
    """The ipywidgets control of class ``widget-<kind>`` whose description is ``label``."""
    return panel.locator(f".widget-{kind}").filter(has=page.locator(".widget-label", has_text=re.compile(rf"^{label}$")))


def _wait_for_status(panel, pattern: str) -> str:
    """Wait until the panel's text matches ``pattern`` (fails at once on an ``error:`` line)."""
    def matched():
        text = panel.inner_text()
        assert "error:" not in text, f"the panel shows an error:\n{text}"
        return re.search(pattern, text) and text

    return _wait(matched, f"{pattern!r} in the panel")


def _image_bytes(img) -> bytes:
    """The bytes behind an <img> (ipywidgets shows Image values through blob: URLs)."""
    data = img.evaluate("""async (el) => {
        if (!el.src) return '';
        const buf = new Uint8Array(await (await fetch(el.src)).arrayBuffer());
        let s = ''; for (const b of buf) s += String.fromCharCode(b);
        return btoa(s);
    }""")
    return base64.b64decode(data)


def _is_png(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n"


def _shoot(page, panel, name: str) -> Path:
    """Screenshot one panel whole: the notebook scrolls inside the page, so make the page taller than the panel."""
    path = ARTIFACTS / f"{name}.png"
    height = panel.bounding_box()["height"]
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height) + 300)})
    try:
        panel.scroll_into_view_if_needed()
        panel.screenshot(path=str(path), animations="disabled")
    finally:
        page.set_viewport_size(VIEWPORT)
    assert path.stat().st_size > 1000
    return path


@pytest.fixture(scope="module")
def session(lab, browser):
    """The tour (with the panel cells) open in a page, all cells run; the kernel watched from the start."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_S * 1000)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    watcher = None
    try:
        watcher = KernelWatcher(lab, _open_notebook(page, lab, NOTEBOOK))
        started = time.monotonic()
        _menu(page, "Run", "runmenu:run-all")
        _wait_until_executed(page)
        print(f"\nRun All Cells: {time.monotonic() - started:.0f} s")
        yield Session(lab, page, watcher)
    except BaseException:
        try:
            page.screenshot(path=str(ARTIFACTS / "run-all-FAILED.png"))
        except Exception:  # the failure itself is what matters
            pass
        raise
    finally:
        (ARTIFACTS / "browser-console.log").write_text("\n".join(console))
        if watcher is not None:
            watcher.close()
        for s in lab.api("sessions"):
            lab.api(f"sessions/{s['id']}", method="DELETE")
        context.close()


@pytest.fixture
def page(session, request):
    """The session's page; a screenshot of it when the test fails."""
    yield session.page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        session.page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-FAILED.png"))


# --------------------------------------------------------------------------------------------------
# the tests (in this order: the last one reads what the others did)
# --------------------------------------------------------------------------------------------------
def test_tour_runs_top_to_bottom_without_errors(page):
    errors = _error_outputs(page)
    assert not errors, "error output in the page:\n" + "\n---\n".join(errors)
    for source in ("GenerationPanel(pipe)", "SweepPanel(pipe", "DenoiseExplorer(pipe)", "WatermarkPanel(", "AuditPanel(",
                   "CompressionPanel("):
        _panel(page, source)  # each panel's cell shows it


def test_generation_panel_generates_from_a_typed_prompt(page):
    panel = _panel(page, "GenerationPanel(pipe)")
    prompt = "a small green square at the bottom on a black background"
    panel.locator("textarea").first.fill(prompt)
    _button(panel, "Generate").click()
    _wait_for_status(panel, r"\d+ image\(s\) in [\d.]+ s")
    gallery = panel.locator(".sdlab-gallery img")  # the panel also holds (empty) ControlNet previews
    assert gallery.count() >= 1 and all(_is_png(_image_bytes(img)) for img in gallery.all())
    assert prompt in panel.locator("pre").first.inner_text(), "the gallery's A1111 text lacks the typed prompt"
    _shoot(page, panel, "GenerationPanel")


def test_denoise_explorer_step_slider_changes_the_picture(page):
    panel = _panel(page, "DenoiseExplorer(pipe)")
    _button(panel, "Trace").click()
    caption = panel.locator(".widget-html").filter(has_text=re.compile(r"^step \d+/\d+"))
    caption.wait_for()
    assert caption.inner_text().startswith("step 1/")
    x_t = panel.locator("img").first
    before = _image_bytes(x_t)
    assert _is_png(before)

    slider = _labelled(page, panel, "slider", "Step")
    handle = slider.locator(".noUi-handle").first
    handle.click()
    for _ in range(8):
        handle.press("ArrowRight")
    readout = slider.locator(".widget-readout")
    if readout.inner_text().strip() in ("", "0"):  # keyboard not taken: drag the handle instead
        box = slider.locator(".noUi-target").bounding_box()
        page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2, steps=10)
        page.mouse.up()
    step = int(readout.inner_text().strip())
    assert step > 0, "the step slider did not move"
    _wait(lambda: caption.inner_text().startswith(f"step {step + 1}/"), f"the caption of step {step + 1}")
    after = _wait(lambda: (b := _image_bytes(x_t)) != before and b, f"x_t to change after moving the slider to {step}")
    assert _is_png(after)

    # pick a prompt token: the attention view shows that token's cross-attention map
    attention = panel.locator("img").nth(3)
    _labelled(page, panel, "dropdown", "Token").locator("select").select_option(label="circle")
    _wait(lambda: _is_png(_image_bytes(attention)), "an attention map after choosing a token")
    _shoot(page, panel, "DenoiseExplorer")


def test_sweep_panel_fills_its_grid(page):
    panel = _panel(page, "SweepPanel(pipe")
    _button(panel, "Run sweep").click()
    _wait_for_status(panel, r"4 images in ")
    assert _is_png(_image_bytes(panel.locator("img").first))
    _shoot(page, panel, "SweepPanel")


def test_watermark_panel_finds_the_mark_it_embeds(page):
    panel = _panel(page, "WatermarkPanel(")
    _labelled(page, panel, "dropdown", "Mark with").locator("select").select_option("sdxl")
    _wait(lambda: "very likely" in panel.locator("table").inner_text(), "SDXL's mark to be detected")
    assert "error:" not in panel.inner_text()
    assert _is_png(_image_bytes(panel.locator("img").first))
    _shoot(page, panel, "WatermarkPanel")


def test_audit_panel_opens_a_dataset_and_runs_an_analysis(page):
    panel = _panel(page, "AuditPanel(")
    _button(panel, "Open").click()
    panel.locator("li", has_text="rows").first.wait_for()
    _button(panel, "Run").click()
    panel.locator("td", has_text="pinimg.com").first.wait_for()
    _wait_for_status(panel, r"\bdone\b")
    panel.locator("img").first.wait_for()  # the domains analysis draws its plots beside the table
    _shoot(page, panel, "AuditPanel")


def test_compression_panel_compares_codecs(page):
    panel = _panel(page, "CompressionPanel(")
    _button(panel, "Compare").click()
    _wait_for_status(panel, r"\bdone\b")
    _wait(lambda: panel.locator("text=PSNR").count() == 3, "PSNR under each of the three codecs")
    assert "over budget" not in panel.inner_text()
    assert panel.locator("img").count() == 4, "expected the original and three codecs"
    _shoot(page, panel, "CompressionPanel")


def test_no_exception_in_the_page_the_saved_notebook_or_the_kernel(session, page):
    errors = _error_outputs(page)
    assert not errors, "error output in the page:\n" + "\n---\n".join(errors)

    # the notebook as the server stores it, saved from the page
    lab = session.lab
    before = lab.api(f"contents/{NOTEBOOK}?content=0")["last_modified"]
    _menu(page, "File", "docmanager:save")
    _wait(lambda: lab.api(f"contents/{NOTEBOOK}?content=0")["last_modified"] != before, "the notebook to be saved")
    code = [c for c in lab.api(f"contents/{NOTEBOOK}?content=1")["content"]["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code), "a code cell was not executed"
    saved = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not saved, "error outputs in the saved notebook: " + "; ".join(f"{o['ename']}: {o['evalue']}" for o in saved)

    # the kernel: nothing raised (cells, widget callbacks, threads), and no panel holds an error
    assert not session.watcher.errors, "the kernel reported exceptions:\n" + "\n---\n".join(session.watcher.errors)
    last_errors = ast.literal_eval(session.watcher.evaluate("{name: p.last_error for name, p in PANELS.items()}"))
    assert last_errors == dict.fromkeys(PANEL_NAMES), f"the panels' last errors: {last_errors}"
