"""The headline table written out: ``headline.csv`` (tidy), ``headline.tex`` (booktabs, compiles standalone),
``headline.html`` (the report's first page) and Markdown (printed, for a README or an e-mail).

``medgrid table --summary results/summary.parquet --out-dir results/tables`` (:func:`make_headline`).
The tables themselves are :mod:`medgrid.report.headline`'s.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from medgrid import results
from medgrid.atomic import atomic_outputs
from medgrid.errors import UserError
from medgrid.names import HEADLINE_COLUMNS
from medgrid.report import headline, headline_blocks
from medgrid.report.headline_blocks import Block, Cell

FILES = {"csv": "headline.csv", "tex": "headline.tex", "html": "headline.html"}


def write_csv(frame: pd.DataFrame, path) -> Path:
    """The tidy headline frame (fractions, as the summary holds them; ``text`` is the cell as shown)."""
    frame.to_csv(path, index=False)
    return Path(path)


# ------------------------------------------------------------------------------------------ LaTeX

TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
       "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "∞": r"$_\infty$", "ε": r"$\varepsilon$",
       "±": r"$\pm$", "·": r"$\cdot$", "–": "--", "−": "$-$", headline.DEGENERATE: r"$^\dagger$",
       headline.PGD_ONLY: r"$^\ddagger$", headline.NOT_COMPARABLE_MARK: r"\S{}", headline.SUBSET: r"\P{}",
       headline.OVERFIT: r"$\|$", "β": r"$\beta$"}


DATASET = re.compile(r"D_(rand|det|R)\b")  # Ilyas et al.'s datasets, written D_rand in plain text


def tex(text: str) -> str:
    """``text`` as LaTeX: special characters escaped, the few non-ASCII symbols medgrid prints and the
    dataset names (D_rand) as math."""
    text, parts, pos = str(text), [], 0
    for m in DATASET.finditer(text):
        parts += ["".join(TEX.get(ch, ch) for ch in text[pos:m.start()]), rf"$D_\mathrm{{{m.group(1)}}}$"]
        pos = m.end()
    return "".join(parts) + "".join(TEX.get(ch, ch) for ch in text[pos:])


ABOVE_CHANCE = " · above chance: "  # how a D_rand / D_det cell states its test (medgrid.report.headline)


def _tex_cell(cell: Cell | None) -> str:
    """A cell; a tested one (D_rand / D_det) on two lines, the test's verdict small below the value, so the
    table keeps to a landscape page."""
    if cell is None:
        return "--"
    value, tested, verdict = cell.text.partition(ABOVE_CHANCE)
    body = tex(value)
    body = rf"\textbf{{{body}}}" if cell.best else body
    body += tex(cell.mark)
    if tested:
        body = rf"\shortstack[r]{{{body}\\\scriptsize {tex(verdict)}}}"  # the caption names the test
    return body


def _tex_detail(detail: str) -> str:
    """A header's second line, in small type; a long list (worst of PGD-20, APGD-CE, APGD-T) on two lines."""
    first, sep, rest = detail.partition(", ")
    if sep and len(detail) > 20:
        return rf"\footnotesize\shortstack[r]{{{tex(first + ',')}\\{tex(rest)}}}"
    return rf"\footnotesize {tex(detail)}"


def _tex_title(title: str) -> str:
    """A column's title; a long one (robust L-inf 2/255, D_rand model) on two lines, so wide tables fit."""
    first, sep, rest = title.partition(" ")
    if sep and len(title) > 10:
        return rf"\shortstack[r]{{{tex(first)}\\{tex(rest)}}}"
    return tex(title)


def _tex_table(block: Block) -> str:
    n = len(block.headers)
    wide = n > 9  # every column of the headline (D_rand / D_det with their AUCs): smaller type to fit the page
    lines = [r"\begin{table}[htbp]", r"\centering", r"\footnotesize" if wide else r"\small",
             rf"\setlength{{\tabcolsep}}{{{2 if wide else 4}pt}}",
             rf"\caption{{{tex(block.title)}: {tex(headline_blocks.caption(block))}}}",
             rf"\begin{{tabular}}{{l{'r' * n}}}", r"\toprule",
             " & ".join(["training"] + [_tex_title(t) for t, _ in block.headers]) + r" \\",
             " & ".join([""] + [_tex_detail(d) for _, d in block.headers]) + r" \\",
             r"\midrule"]
    for i, (label, cells) in enumerate(block.rows):
        if i in block.breaks:  # another training method's rows
            lines.append(r"\midrule")
        lines.append(" & ".join([tex(label)] + [_tex_cell(c) for c in cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if block.notes:
        notes = r" \\ ".join(tex(f"{mark} {text}".strip()) for mark, text in block.notes)
        lines += [r"\par\smallskip", rf"{{\footnotesize {notes}\par}}"]
    lines.append(r"\end{table}")
    return "\n".join(lines)


def to_latex(blocks: list[Block], source: str = "") -> str:
    """A standalone document (pdflatex) with one booktabs table per task, size and arch; paste the
    ``table`` environments into a paper that loads booktabs."""
    head = [f"% medgrid headline table of {source}" if source else "% medgrid headline table",
            "% regenerate: medgrid table --summary results/summary.parquet --out-dir results/tables",
            r"% each table environment below needs only \usepackage{booktabs} in a paper",
            r"\documentclass{article}", r"\usepackage{booktabs}",
            r"\usepackage[landscape,margin=1.5cm]{geometry}", r"\begin{document}", ""]
    body = [f"% ---- {b.title}\n" + _tex_table(b) + "\n" for b in blocks]
    return "\n".join(head + body + [r"\end{document}", ""])


# ------------------------------------------------------------------------------------------- HTML

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 80em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin: 1.6em 0 0.3em; }
p.cap { margin: 0.2em 0 0.6em; color: #444; font-size: 13px; }
table.h { border-collapse: collapse; font-size: 14px; border-top: 2px solid #222; border-bottom: 2px solid #222; }
table.h th, table.h td { padding: 4px 10px; text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.h th:first-child, table.h td:first-child { text-align: left; }
table.h thead tr.detail th { font-weight: normal; font-size: 12px; color: #555; border-bottom: 1px solid #222; }
table.h tbody tr:hover td { background: #f4f6ff; }
table.h tbody tr.group td { border-top: 1px solid #999; }
p.note { font-size: 12px; color: #444; margin: 0.2em 0; }
"""


def _html_cell(cell: Cell | None) -> str:
    if cell is None:
        return "<td>–</td>"
    body = html.escape(cell.text)
    body = f"<strong>{body}</strong>" if cell.best else body
    return f"<td>{body}{f'<sup>{cell.mark}</sup>' if cell.mark else ''}</td>"


def _html_table(block: Block) -> str:
    titles = "".join(f"<th>{html.escape(t)}</th>" for t, _ in block.headers)
    details = "".join(f"<th>{html.escape(d)}</th>" for _, d in block.headers)
    opens = ['<tr class="group">' if i in block.breaks else "<tr>" for i in range(len(block.rows))]
    body = "\n".join(f"{tr}<td>{html.escape(label)}</td>{''.join(_html_cell(c) for c in cells)}</tr>"
                     for tr, (label, cells) in zip(opens, block.rows))
    notes = "\n".join(f'<p class="note">{html.escape(f"{m} {t}".strip())}</p>' for m, t in block.notes)
    return (f"<h2>{html.escape(block.title)}</h2>\n<p class=\"cap\">{html.escape(headline_blocks.caption(block))}</p>\n"
            f'<table class="h">\n<thead><tr><th>training</th>{titles}</tr>\n'
            f'<tr class="detail"><th></th>{details}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n{notes}')


def to_html(blocks: list[Block], source: str = "") -> str:
    intro = ("Per task, image size and architecture: one row per training setting (standard, then adversarial "
             "training by norm and ε: PGD-AT, then each other training method in a group of its own). Robust "
             "columns: balanced accuracy under the strongest evaluation the "
             "results hold at that ε (the header names it). D_rand / D_det models sit on the standard row, the "
             "D_R model on the row of the robust model it was made from; all are tested on the original test set. "
             "The same numbers: headline.csv (tidy, fractions) and headline.tex (booktabs).")
    src = f" Source: {html.escape(source)}." if source else ""
    tables = "\n".join(_html_table(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>medgrid: headline results</title>\n'
            f"<style>{STYLE}</style></head><body>\n<h1>Headline results</h1>\n<p class=\"cap\">{intro}{src}</p>\n"
            f"{tables}\n</body></html>\n")


# --------------------------------------------------------------------------------------- Markdown


def to_markdown(blocks: list[Block]) -> str:
    """The tables as Markdown (for a README): bold best values, the notes below each table."""
    out = []
    for b in blocks:
        head = ["training"] + [f"{t} ({d})" for t, d in b.headers]
        out += [f"**{b.title}**: {headline_blocks.caption(b)}", "", "| " + " | ".join(head) + " |",
                "|" + "---|" + "---:|" * len(b.headers)]
        for label, cells in b.rows:
            shown = ["–" if c is None else (f"**{c.text}**" if c.best else c.text) + c.mark for c in cells]
            out.append("| " + " | ".join([label] + shown) + " |")
        out += [""] + [f"{m} {t}".strip() + "  " for m, t in b.notes] + [""]
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------------- driver


def make_headline(summary, out_dir, *, eps: dict[str, float], columns=HEADLINE_COLUMNS,
                  pgd_steps: int | None = None) -> dict[str, Path]:
    """headline.csv, .tex and .html of a tidy summary in ``out_dir``; returns {format: path}, prints Markdown."""
    df = results.read_table(summary)
    if df.empty:
        raise UserError(f"results table {summary} has no rows; run the evaluations first")
    frame = headline.build(df, eps=eps, columns=columns)
    blocks = headline_blocks.blocks(frame, eps=eps, pgd_steps=pgd_steps, columns=columns)
    out_dir = Path(out_dir)
    paths = {fmt: out_dir / name for fmt, name in FILES.items()}
    with atomic_outputs(*paths.values()) as temps:  # the three files, all or none
        tmp = dict(zip(paths, temps))
        write_csv(frame, tmp["csv"])
        tmp["tex"].write_text(to_latex(blocks, str(summary)), encoding="utf-8")
        tmp["html"].write_text(to_html(blocks, str(summary)), encoding="utf-8")
    print(to_markdown(blocks))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths
