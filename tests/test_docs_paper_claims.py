"""The detection docs say what the paper says, in its words, and label our choices as ours.

The paper (section 4.3, Table 8) names Faster R-CNN, "MS COCO 2014", 5 epochs of fine-tuning and
"MS COCO validation dataset"; it names no FPN, no train2014 and no val2014. Those are our choices.
"""
import os.path as osp
import re

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOC = osp.join(ROOT, 'docs', 'detection.md')


def _paragraph(text, start):
    i = text.index(start)
    return text[i:text.index('\n\n', i)]


def test_what_the_paper_says_is_quoted_and_names_no_choice_of_ours():
    text = open(DOC).read()
    paper = _paragraph(text, 'What the paper says')
    for quote in ('MS COCO 2014 detection dataset', 'Faster-RCNN [38] is chosen',
                  'finetuned on the COCO dataset with 5 epochs', 'MS COCO validation dataset'):
        assert quote in paper, quote
    for ours in ('FPN', 'train2014', 'val2014'):
        assert ours not in paper, ours
    choices = _paragraph(text, 'Our choices, not the paper')
    for ours in ('FPN', 'train2014', 'val2014'):
        assert ours in choices, ours


def test_paper_table8_rows_carry_the_papers_split_name():
    rows = [ln for ln in open(DOC).read().splitlines() if '(paper, Table 8)' in ln]
    assert len(rows) == 3
    for row in rows:
        source = [c.strip() for c in row.strip('|').split('|')][1]
        assert source == 'paper: "MS COCO validation"', row  # as tools/test.py prints it
        assert not re.search(r'(train|val|minival)20\d\d', row), row
