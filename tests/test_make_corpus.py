"""The cleaning functions of calibration/make_corpus.py on small inline inputs (no network, no packages)."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "calibration" / "make_corpus.py"


@pytest.fixture(scope="module")
def mc():
    spec = importlib.util.spec_from_file_location("make_corpus", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_corpus"] = module  # dataclasses look their module up while it is being executed
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("make_corpus", None)


PROSE = ("The quick brown fox jumps over the lazy dog, and then it runs back into the forest "
         "where it lives with its family.")


def test_html_keeps_prose_and_drops_code_nav_and_tables(mc):
    page = f"""<html><head><title>Page title that is long enough to be a paragraph of text</title></head>
    <body><div class="navheader"><a href="a.html">Prev</a> Up Next: the chapter about foxes and dogs</div>
    <h1>A heading about foxes, which is long but still only a heading</h1>
    <div class="para">{PROSE.replace(" over", " <code>over</code>")}</div>
    <pre class="programlisting">for fox in foxes: jump(fox) # a code line that runs on and on and on</pre>
    <div class="listingblock"><div class="content">$ git commit --amend --no-edit and other words</div></div>
    <table><tr><td>A table cell with a sentence long enough to pass the length filter.</td></tr></table>
    <div class="note"><table summary="Note"><tr><th>Note</th></tr><tr><td><p>Notes are prose, so the
    admonition's text is kept even though DocBook wraps it in a table.</p></td></tr></table></div>
    <p>Short.</p><div class="navfooter">Copyright (C) 2024 the authors of a very long footer line</div>
    </body></html>"""
    assert list(mc.clean(mc.html_paragraphs(page))) == [
        PROSE, "Notes are prose, so the admonition's text is kept even though DocBook wraps it in a table."]


def test_mallard_page_drops_info_and_screen(mc):
    page = f"""<page xmlns="http://projectmallard.org/1.0/"><info><desc>Metadata text that should never
    show up in the corpus at all.</desc><media type="image" src="x.png"/></info><title>Title</title>
    <p>{PROSE}</p><screen>sudo apt install something-long --with-options and more words</screen>
    <steps><item><p>Open the <gui>Settings</gui> window and then click on the panel that you want to change.</p>
    </item></steps></page>"""
    assert list(mc.clean(mc.html_paragraphs(page))) == [
        PROSE, "Open the Settings window and then click on the panel that you want to change."]


def test_rst_drops_literal_blocks_directives_headings_and_tables(mc):
    doc = f"""
==============
Document title
==============

Section
-------

{PROSE[:48]}
{PROSE[49:]}

To build the kernel, run the following two commands in this order::

    make defconfig
    make -j8 all the things that need to be built for the kernel

.. code-block:: c

   static int foo(void) {{ return the_answer_to_everything_in_the_universe; }}

.. note::
   Notes are admonitions; their body is prose and is kept in the output.

.. Comment that is long enough to be a paragraph but is only a comment in reST.

+---------------------------------------------+------------+
| A grid table with a long enough cell of text | and more   |
+---------------------------------------------+------------+

- A bullet item written with :c:func:`kmalloc` and ``GFP_KERNEL`` and a `link <https://example.org>`_ in it.

term
    The definition of the term is kept as its own paragraph, without the term.
"""
    got = list(mc.clean(mc.rst_paragraphs(doc)))
    assert got == [
        PROSE,
        "To build the kernel, run the following two commands in this order:",
        "Notes are admonitions; their body is prose and is kept in the output.",
        "A bullet item written with kmalloc and GFP_KERNEL and a link in it.",
        "The definition of the term is kept as its own paragraph, without the term.",
    ]


def test_pod_keeps_ordinary_paragraphs_only(mc):
    pod = ("=head1 NAME\n\nperlfoo - a manual page\n\n=head1 DESCRIPTION\n\n"
           "Use C<open> to open a file, and see L<perlfunc/open> or L<the manual|perlfunc> for the E<lt>details.\n"
           "This line is wrapped.\n\n    my $fh = open(...);  # verbatim code is dropped\n\n"
           "=begin html\n\n<p>Raw HTML for one formatter only, not prose for anybody.</p>\n\n=end html\n\n"
           "=cut\n\nsub code_after_cut { return 'not pod and not prose at all, even if long' }\n")
    assert mc.pod_paragraphs(pod)[1:] == [
        "Use open to open a file, and see open or the manual for the <details. This line is wrapped."]


def _dictd(entries: dict[str, str]) -> tuple[str, bytes]:
    """A dictd index and data (uncompressed) for the given entries."""
    def b64(n: int) -> str:
        digits = ""
        while True:
            digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[n % 64] + digits
            n //= 64
            if not n:
                return digits
    data, index = b"", []
    for word, text in entries.items():
        raw = text.encode()
        index.append(f"{word}\t{b64(len(data))}\t{b64(len(raw))}")
        data += raw
    return "\n".join(index) + "\n", data


def test_dictd_wordnet_entry(mc):
    entry = """dog
    n 1: a member of the genus Canis (probably descended from the
         common wolf); "the dog barked all night" [syn: {dog},
         {domestic dog}]
    2: informal term for a man; "you lucky dog"
    v 1: go after with the intent to catch; "the dog chased the
         rabbit" [syn: {chase}, {dog}]
"""
    index, data = _dictd({"00-database-info": "about this database", "dog": entry})
    assert list(mc.dict_entries(index, data)) == [("dog", entry)]
    assert mc.wordnet_paragraph(entry) == (
        'dog (noun) 1. a member of the genus Canis (probably descended from the common wolf): '
        '"the dog barked all night". Also: domestic dog. 2. informal term for a man: "you lucky dog". '
        '(verb) 1. go after with the intent to catch: "the dog chased the rabbit". Also: chase.')


def test_dictd_jargon_entry(mc):
    entry = ("hacker\n n.\n\n    [originally, someone who makes furniture with an axe]\n\n"
             "    1. A person who enjoys exploring the details of {programmable systems}\n"
             "    and how to stretch their capabilities.\n\n    2. One who programs enthusiastically.\n")
    assert mc.dict_paragraphs(entry, head_line=True) == [
        "hacker n. [originally, someone who makes furniture with an axe]: 1. A person who enjoys exploring "
        "the details of programmable systems and how to stretch their capabilities.",
        "2. One who programs enthusiastically."]


def test_fortunes_and_overstrike(mc):
    text = "A short one.\n%\nThe best way to predict the future\nis to invent it.\n\t\t-- Alan Kay\n%\n"
    assert mc.fortune_paragraphs(text) == [
        "A short one.", "The best way to predict the future is to invent it. -- Alan Kay"]
    assert mc.normalize("_\bb_\bo_\bl_\bd  and\n\tplain") == "bold and plain"


def test_prose_filter(mc):
    assert mc.is_prose(PROSE)
    assert not mc.is_prose("Too short to be a paragraph.")
    assert not mc.is_prose("$ sudo apt-get install linux-doc postgresql-doc-15 debian-handbook perl-doc now")
    assert not mc.is_prose("int main(void) { return foo_bar(baz, qux) + quux[corge] * grault->garply; }")
    assert not mc.is_prose("This program is free software; you can redistribute it and/or modify it under the GPL.")
    assert not mc.is_prose("Der schnelle braune Fuchs springt über den faulen Hund und läuft zurück in den Wald.")
    assert not mc.is_prose(PROSE[:-1] + " and then", need_end=True)
    assert mc.is_prose(PROSE[:-1] + " and then", need_end=False)


def test_split_long_at_sentence_ends(mc):
    text = " ".join(f"Sentence number {i} is here to make the paragraph long." for i in range(100))
    pieces = mc.split_long(text, 500)
    assert all(len(p) <= 500 and p.endswith(".") and p.startswith("Sentence") for p in pieces)
    assert " ".join(pieces) == text
    assert mc.split_long("word " * 300, 500)[0].endswith("word")  # no sentence end: cut at a space


def test_thin_spreads_evenly(mc):
    paras = [f"paragraph {i:04d}" for i in range(1000)]
    kept = mc.thin(paras, sum(len(p) + 2 for p in paras) // 4)
    assert 240 <= len(kept) <= 260 and kept[0] == paras[0] and int(kept[-1].split()[1]) > 990


def test_r_unserialize_character_vector(mc):
    def i(n: int) -> bytes:
        return struct.pack(">i", n)
    lines = ["PRIDE AND PREJUDICE", "", "It is a truth universally acknowledged"]
    blob = b"X\n" + i(2) + i(0x040200) + i(0x020300) + i(16) + i(len(lines))
    blob += b"".join(i(9 | (1 << 15)) + i(len(s.encode())) + s.encode() for s in lines)
    assert mc.r_unserialize(blob) == lines
    assert mc.text_paragraphs(lines + ["that a single man", "", ""]) == [
        "PRIDE AND PREJUDICE", "It is a truth universally acknowledged that a single man"]


def test_wesnoth_dialogue(mc):
    wml = """[event]
    name=start
    [message]
        speaker=Konrad
        message= _ "Delfador, some orcs are following us! We must make haste!"
    [/message]
    #   [message]
    #   message= _ "A commented-out line."
    [message]
        speaker=narrator
        message= _ "The ""orcs"" <i>close</i> in."
    [/message]
    [message]
        speaker=unit
        message= _ "Hello $unit.name, this has a variable."
    [/message]
[/event]
[part]
    story= _ "Long ago, the kingdom of Wesnoth was ruled by a wise king."
[/part]
"""
    assert mc.wml_paragraphs(wml) == [
        'Konrad: "Delfador, some orcs are following us! We must make haste!" The "orcs" close in.',
        "Long ago, the kingdom of Wesnoth was ruled by a wise king."]
