"""The admin page in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium): it loads, shows the servers and their
states, its disable button disables a server (checked with penctl), and a
screenshot of it is not blank."""

import json
import os
import pwd
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

from conftest import TIMEOUT, connect, free_port, listening, read_line, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ME = pwd.getpwuid(os.getuid()).pw_name

webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium is not installed (pip install selenium)")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} "
                "(Debian: apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.chrome.service import Service          # noqa: E402
from selenium.webdriver.common.by import By                     # noqa: E402


def penctl(ctl, *words):
    proc = subprocess.run([sys.executable, "-m", "penctl", f"127.0.0.1:{ctl}", *words],
                          capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def server_json(ctl, i):
    return json.loads(penctl(ctl, "status", "json"))["servers"][i]


def png_pixels(data):
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG,
    unfiltered by hand (zlib only: no imaging library)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and not interlace, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def colour_census(data):
    """(distinct colours, share of pixels unlike the top-left one)."""
    width, height, bpp, rows = png_pixels(data)
    background = rows[0][:3]
    colours, other = set(), 0
    for row in rows:
        for x in range(0, len(row), bpp):
            pixel = row[x:x + 3]
            colours.add(pixel)
            other += pixel != background
    return len(colours), other / (width * height)


@pytest.fixture
def farm(pen, backends):
    bs = backends(2)
    adm, ctl, port = free_port(), free_port(), free_port()
    pen("-u", ME, "-C", f"127.0.0.1:{ctl}", "-o", f"admin_listen 127.0.0.1:{adm}",
        f"127.0.0.1:{port}", *[b.spec for b in bs], port=port)
    assert wait_until(lambda: listening(adm) and listening(ctl))
    return adm, ctl, port


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1200,800", "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT * 2)
    try:
        yield driver
    finally:
        driver.quit()


def state_cell(driver, i):
    return driver.find_element(By.CSS_SELECTOR, f"#server-{i} [data-field=state]")


def test_page_shows_servers_and_disable_works(farm, browser):
    adm, ctl, port = farm
    browser.get(f"http://127.0.0.1:{adm}/")
    assert browser.title == "pen admin"
    rows = browser.find_elements(By.CSS_SELECTOR, "#servers tbody tr")
    assert len(rows) == 2
    assert [state_cell(browser, i).text for i in (0, 1)] == ["up", "up"]
    browser.find_element(By.ID, "disable-1").click()
    assert wait_until(lambda: server_json(ctl, 1)["disabled"])
    assert not server_json(ctl, 0)["disabled"]
    # the form's answer sends the browser back to the page, which shows it
    assert wait_until(lambda: state_cell(browser, 1).text == "disabled")
    # a change made elsewhere (penctl) appears without a reload, via /admin.js
    penctl(ctl, "server", "1", "enable")
    assert wait_until(lambda: state_cell(browser, 1).text == "up", timeout=10)
    with connect(port) as client:          # an open connection shows up too
        assert read_line(client) in ("S0", "S1")
        assert wait_until(lambda: len(browser.find_elements(
            By.CSS_SELECTOR, "#conns tbody tr")) == 1, timeout=10)
        assert browser.find_element(By.ID, "connections").text == "1"


def test_a_forged_form_without_the_token_is_refused(farm, browser):
    adm, ctl, port = farm
    browser.get(f"http://127.0.0.1:{adm}/")
    browser.execute_script(
        "var f = document.querySelector('#server-0 form');"
        "f.querySelector('[name=csrf]').remove(); f.submit();")
    assert wait_until(lambda: "403" in browser.find_element(By.TAG_NAME, "body").text)
    assert not server_json(ctl, 0)["disabled"]


def test_screenshot_is_not_blank(farm, browser, tmp_path):
    adm, ctl, port = farm
    browser.get(f"http://127.0.0.1:{adm}/")
    table = browser.find_element(By.ID, "servers")
    assert table.size["width"] > 300 and table.size["height"] > 40
    png = browser.get_screenshot_as_png()
    (tmp_path / "admin.png").write_bytes(png)
    colours, share = colour_census(png)
    assert colours >= 4, f"screenshot has {colours} colours: the page rendered empty"
    assert share > 0.02, f"only {share:.1%} of the screenshot is not background"


def test_census_tells_a_blank_png_from_a_drawn_one():
    def png(width, height, rows):
        def chunk(kind, body):
            return (struct.pack(">I", len(body)) + kind + body
                    + struct.pack(">I", zlib.crc32(kind + body)))
        raw = b"".join(b"\x00" + row for row in rows)
        return (b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    blank = png(4, 4, [b"\xff" * 12] * 4)
    assert colour_census(blank) == (1, 0.0)
    drawn = png(4, 4, [b"\xff" * 12, b"\x00\x00\x00" * 2 + b"\xff\x00\x00" * 2,
                       b"\x00\xff\x00" * 4, b"\xff" * 12])
    colours, share = colour_census(drawn)
    assert colours == 4 and share == 0.5
