"""--watch on a real X server: Xvfb, screenshotted with Pillow while the agent plays, and a window closed
the way a window manager closes it."""

import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import ImageGrab

from conftest import PATIENCE, clip_folder, decoded_frames, lines_until, run_main, start_script, trained_agent_score

XVFB = shutil.which("Xvfb")
pytestmark = pytest.mark.skipif(XVFB is None, reason="needs Xvfb (Debian: apt-get install xvfb)")
POLE, BLACK = (202, 152, 101), (0, 0, 0)  # gymnasium's CartPole: the pole's colour; the cart and the track


@pytest.fixture
def x_display():
    """A new Xvfb server, with a black root window, on a display number it chooses itself."""
    read, write = os.pipe()
    # -noreset: an X server resets when its last client goes, and turns new clients away meanwhile; the
    # screenshots below come and go while the script is still importing torch.
    server = subprocess.Popen([XVFB, "-displayfd", str(write), "-screen", "0", "800x600x24", "-br", "-nolisten", "tcp",
                               "-noreset"], pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as ready:
        name = f":{ready.readline().strip()}"
    deadline = time.monotonic() + PATIENCE
    while True:  # the number comes as the server starts to listen; wait until it answers, too
        try:
            ImageGrab.grab(xdisplay=name)
            break
        except OSError:
            assert time.monotonic() < deadline, f"Xvfb on {name} does not answer"
            time.sleep(0.05)
    yield name
    server.terminate()
    server.wait(timeout=PATIENCE)


def watch(x_display, *args):
    return start_script(*args, "--watch", env_changes={"DISPLAY": x_display, "SDL_VIDEODRIVER": None,
                                                       "WAYLAND_DISPLAY": None})


def cartpole_on_screen(x_display):
    """The screen, when it shows CartPole: the pole's colour and the cart's black on a white field. The
    field is the white pixels' bounding box; the root window around it is black."""
    screen = np.asarray(ImageGrab.grab(xdisplay=x_display).convert("RGB"))
    white = (screen == 255).all(axis=2)
    if white.sum() < 100_000:  # no window yet: CartPole's is 600 x 400
        return None
    rows, cols = np.flatnonzero(white.any(axis=1)), np.flatnonzero(white.any(axis=0))
    field = screen[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    pole, black = (field == POLE).all(axis=2).sum(), (field == BLACK).all(axis=2).sum()
    return screen if pole > 300 and black > 1000 and white.sum() > 0.8 * field.shape[0] * field.shape[1] else None


def wait_for_cartpole(x_display, child):
    deadline = time.monotonic() + PATIENCE
    while child.poll() is None and time.monotonic() < deadline:
        screen = cartpole_on_screen(x_display)
        if screen is not None:
            return screen
        time.sleep(0.05)
    pytest.fail(f"no screenshot showed the cart and the pole: {child.communicate(timeout=PATIENCE)}")


def close_windows(x_display):
    """What a window manager does when the user clicks a window's close button: WM_DELETE_WINDOW."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong] + [ctypes.c_void_p] * 4
    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    for name in ("XFlush", "XCloseDisplay", "XFree"):
        getattr(x11, name).argtypes = [ctypes.c_void_p]

    class ClientMessage(ctypes.Structure):  # an XClientMessageEvent, padded to the size of an XEvent
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                    ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                    ("format", ctypes.c_int), ("data", ctypes.c_long * 5), ("padding", ctypes.c_long * 12)]

    display = x11.XOpenDisplay(x_display.encode())
    root, parent, children, count = ctypes.c_ulong(), ctypes.c_ulong(), ctypes.c_void_p(), ctypes.c_uint()
    x11.XQueryTree(display, x11.XDefaultRootWindow(display), ctypes.byref(root), ctypes.byref(parent),
                   ctypes.byref(children), ctypes.byref(count))
    windows = ctypes.cast(children, ctypes.POINTER(ctypes.c_ulong))[:count.value]
    for window in windows:
        message = ClientMessage(type=33, window=window, format=32,  # 33: ClientMessage
                                message_type=x11.XInternAtom(display, b"WM_PROTOCOLS", False))
        message.data[0] = x11.XInternAtom(display, b"WM_DELETE_WINDOW", False)
        x11.XSendEvent(display, window, False, 0, ctypes.byref(message))
    x11.XFlush(display)
    x11.XFree(children)
    x11.XCloseDisplay(display)
    return len(windows)


def clips(video_dir):
    """The clips' names, after checking that every one decodes."""
    names = sorted(os.listdir(video_dir))
    assert all(decoded_frames(video_dir / name)[1] > 0 for name in names)
    return names


@pytest.mark.parametrize("how,status", [("close the window", 0), ("press Ctrl-C", 130)])
def test_watching_ends_when_the_window_is_closed_or_on_ctrl_c(how, status, x_display, checkpoint, tmp_path):
    child = watch(x_display, "--play", checkpoint, "--eval-episodes", 1000, "--video-dir", tmp_path / "video")
    wait_for_cartpole(x_display, child)
    shown = lines_until(child, "Video: ")  # an episode has ended, on screen and recorded
    if how == "close the window":
        assert close_windows(x_display) == 1
    else:
        os.killpg(child.pid, signal.SIGINT)
    stdout, stderr = child.communicate(timeout=PATIENCE)
    stdout = shown + stdout
    assert child.returncode == status and stderr == "", (stdout, stderr)
    played = int(re.search(r"^(?:Played|Stopped by SIGINT: played) (\d+)", stdout, re.M).group(1))
    assert re.search(rf"^Played {played} episodes of CartPole-v0 with .*policy\.pt: return ", stdout, re.M), stdout
    # Each episode is recorded as without --watch, and the one that was on screen too, up to where it stopped.
    assert 0 < played < 1000
    folder = tmp_path / "video" / f"play-{checkpoint.stem}"  # a folder of its own, named after the checkpoint
    assert clips(folder) == sorted(f"play-episode-{episode}.mp4" for episode in range(played + 1))


def test_watch_with_a_display_that_cannot_be_opened_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99999")
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = run_main("--watch", "--video-dir", tmp_path / "video")
    assert result.returncode == 2 and result.stdout == ""
    assert re.fullmatch(r"reinforce_cartpole.py: error: --watch: cannot open a window \(.+\)\n", result.stderr)
    assert not (tmp_path / "video").exists()


def test_training_with_watch_shows_and_records_the_trained_agent(x_display, tmp_path):
    child = watch(x_display, "--max-episodes", 3, "--eval-episodes", 5, "--video-dir", tmp_path / "video")
    wait_for_cartpole(x_display, child)
    stdout, stderr = child.communicate(timeout=PATIENCE)
    assert child.returncode == 1 and stderr == "", stderr  # three episodes do not solve it
    assert trained_agent_score(stdout)[0] == 5
    assert clips(clip_folder(tmp_path / "video")) == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4",
                                                      "trained-agent-episode-0.mp4"]
