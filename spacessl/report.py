"""Self-contained HTML pages: every picture is inlined as a data URI, so the file opens offline,
can be mailed or copied anywhere, and needs no server.

Each <img> records in its data-state attribute whether the browser decoded it ("loaded") or
not ("failed", also shown as a red frame), so a broken picture is visible, and checkable.
"""

import base64
import html
import io
import time
from pathlib import Path

from PIL import Image

from .config import atomic_path

STYLE = """
body { background: #111; color: #ddd; font: 14px/1.4 system-ui, sans-serif; margin: 24px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; background: #1d1d1d; padding: 6px; border-radius: 4px; }
figcaption { font-size: 12px; max-width: 220px; overflow-wrap: anywhere; }
img[data-state="failed"] { outline: 3px solid red; }
table.meta td { padding: 0 12px 0 0; vertical-align: top; }
"""
IMG_EVENTS = 'onload="this.dataset.state=\'loaded\'" onerror="this.dataset.state=\'failed\'"'


def png_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def figure(uri: str, caption: str, css_class: str) -> str:
    return (f'<figure class="{css_class}"><img src="{uri}" data-state="pending" {IMG_EVENTS} '
            f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def write_page(out: Path, title: str, meta: dict, sections: list) -> None:
    """sections: (heading, [(data uri, caption, css class)]) in page order."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    body = [f"<h1>{html.escape(title)}</h1>", f'<table class="meta">{rows}</table>']
    for heading, figures in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append('<div class="grid">' + "".join(figure(*f) for f in figures) + "</div>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")


def created() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
