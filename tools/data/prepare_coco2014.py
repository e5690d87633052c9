"""Check a COCO 2014 folder for the Table 8 configs, and derive the minival2014 split.

Nothing is downloaded: this works on files you already have. Get them from
https://cocodataset.org/#download (2014 Train images, 2014 Val images, 2014 Train/Val
annotations; for minival also the 2017 Val annotations or images) and unzip them so that::

    DATA_ROOT/                       (configs use data/coco/; a symlink is fine)
      annotations/instances_train2014.json      82,783 images
      annotations/instances_val2014.json        40,504 images (the paper's "validation")
      annotations/instances_val2017.json        optional: 5,000 images, for --make-minival
      train2014/COCO_train2014_000000xxxxxx.jpg
      val2014/COCO_val2014_000000xxxxxx.jpg
      val2017/000000xxxxxx.jpg                  optional: its file names also give the ids

Usage::

    python tools/data/prepare_coco2014.py data/coco                 # check what is there
    python tools/data/prepare_coco2014.py data/coco --make-minival  # + minival jsons

``--make-minival`` writes ``annotations/instances_minival2014.json`` (the val2014 images whose ids
are val2017's: 5,000) and ``annotations/instances_valminusminival2014.json`` (the other 35,504),
both pointing at ``val2014/`` images. COCO kept image ids between 2014 and 2017, so val2017's
ids select minival from val2014; the 2014 file names are kept. The exit status is 1 when a
required file or image is missing.
"""
import argparse
import json
import os
import os.path as osp
import re
import sys
from typing import Dict, Iterable, List, Optional, Set

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmdsnet.datasets.coco_layout import (COCO2014_SPLITS, CocoLayoutError,  # noqa: E402
                                          check_images, coco_classes, read_categories,
                                          read_file_names)
from mmdsnet.utils import preview  # noqa: E402

#: split -> (annotation file, image folder, required for the Table 8 configs)
SPLITS = {
    'train2014': ('annotations/instances_train2014.json', 'train2014', True),
    'val2014': ('annotations/instances_val2014.json', 'val2014', True),
    'minival2014': ('annotations/instances_minival2014.json', 'val2014', False),
    'valminusminival2014': ('annotations/instances_valminusminival2014.json', 'val2014', False),
}


def val2017_ids(root: str) -> Optional[Set[int]]:
    """val2017's image ids, from its json if present, else from the val2017/ file names."""
    ann = osp.join(root, 'annotations', 'instances_val2017.json')
    if osp.isfile(ann):
        with open(ann) as f:
            return {im['id'] for im in json.load(f)['images']}
    folder = osp.join(root, 'val2017')
    if osp.isdir(folder):
        ids = {int(m.group(1)) for n in os.listdir(folder)
               if (m := re.fullmatch(r'0*(\d+)\.jpg', n))}
        return ids or None
    return None


def split_by_ids(coco: dict, ids: Set[int]) -> Dict[str, dict]:
    """Split a COCO json dict into the images whose ids are in ``ids`` and the rest."""
    def subset(keep) -> dict:
        images = [im for im in coco['images'] if keep(im['id'])]
        kept = {im['id'] for im in images}
        out = {k: v for k, v in coco.items() if k not in ('images', 'annotations')}
        out['images'] = images
        out['annotations'] = [a for a in coco.get('annotations', []) if a['image_id'] in kept]
        return out
    return dict(minival2014=subset(lambda i: i in ids),
                valminusminival2014=subset(lambda i: i not in ids))


def make_minival(root: str, ids: Optional[Iterable[int]] = None, log=print) -> Dict[str, int]:
    """Write the minival2014 / valminusminival2014 jsons; return their image counts."""
    val = osp.join(root, SPLITS['val2014'][0])
    if not osp.isfile(val):
        raise CocoLayoutError(f'--make-minival needs {val}')
    ids = set(ids) if ids is not None else val2017_ids(root)
    if not ids:
        raise CocoLayoutError(
            f'--make-minival needs the val2017 image ids: put instances_val2017.json in '
            f'{osp.join(root, "annotations")} or the val2017/ images in {root}')
    with open(val) as f:
        coco = json.load(f)
    counts = {}
    for name, sub in split_by_ids(coco, ids).items():
        out = osp.join(root, SPLITS[name][0])
        with open(out, 'w') as f:
            json.dump(sub, f)
        counts[name] = len(sub['images'])
        expected = COCO2014_SPLITS[name]
        note = '' if counts[name] == expected else f'  (WARNING: the official split has {expected})'
        log(f'wrote {out}: {counts[name]} images, {len(sub["annotations"])} boxes{note}')
    missing = len(ids) - counts['minival2014']
    if missing:
        log(f'WARNING: {missing} of the {len(ids)} val2017 ids are not in {val}')
    return counts


def category_problem(ann_file: str) -> Optional[str]:
    """Why the json's categories are not COCO's (the Table 8 configs train COCO's 80 classes:
    mmdet drops every annotation of another name), or None."""
    names = [c['name'] for c in read_categories(ann_file)]
    foreign = [n for n in names if n not in set(coco_classes())]
    if not foreign:
        return None
    which = ('none of its categories is' if len(foreign) == len(names) else
             f'{len(foreign)} of its {len(names)} categories are not')
    return (f'{ann_file}: {which} one of COCO\'s 80 classes ({preview(foreign)}), so mmdet would '
            f'drop their annotations. Use the official annotations_trainval2014.zip; for a '
            f'dataset of your own, set metainfo=dict(classes=...) and num_classes in the config '
            f'instead.')


def check(root: str, check_imgs: bool = True, log=print) -> List[str]:
    """Check every split's json, categories and images; return the problems (empty when all is
    well)."""
    problems = []
    for name, (ann, img_dir, required) in SPLITS.items():
        ann_path, img_path = osp.join(root, ann), osp.join(root, img_dir)
        if not osp.isfile(ann_path):
            msg = f'{name}: {ann_path} missing'
            if required:
                problems.append(msg)
                log(f'[MISSING] {msg}')
            else:
                log(f'[  --   ] {name}: {ann_path} not made (optional; --make-minival)')
            continue
        try:
            names = read_file_names(ann_path)
            expected = COCO2014_SPLITS[name]
            count_note = '' if len(names) == expected else f' (official: {expected})'
            if check_imgs:
                listed, found = check_images(names, img_path, ann_path)
                log(f'[  OK   ] {name}: {listed} images listed{count_note}, {found} found in '
                    f'{img_path}')
            else:
                log(f'[  OK   ] {name}: {len(names)} images listed{count_note} (images not '
                    f'checked)')
            if count_note:
                log(f'          WARNING: {ann_path} lists {len(names)} images; the official '
                    f'{name} has {expected}')
            wrong = category_problem(ann_path)
            if wrong:
                problems.append(f'{name}: {wrong}')
                log(f'[ WRONG ] {name}: {wrong}')
        except CocoLayoutError as e:
            problems.append(f'{name}: {e}')
            log(f'[MISSING] {name}: {e}')
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('data_root', nargs='?', default='data/coco', help='COCO folder')
    p.add_argument('--make-minival', action='store_true',
                   help='derive the minival2014 and valminusminival2014 jsons from val2014')
    p.add_argument('--skip-images', action='store_true',
                   help='check the json files only, not the images on disk')
    args = p.parse_args(argv)
    if not osp.isdir(args.data_root):
        print(f'error: {args.data_root} is not a folder. Unzip the COCO 2014 archives there '
              f'(layout: python {sys.argv[0]} --help).', file=sys.stderr)
        return 1
    if args.make_minival:
        try:
            make_minival(args.data_root)
        except CocoLayoutError as e:
            print(f'error: {e}', file=sys.stderr)
            return 1
    problems = check(args.data_root, check_imgs=not args.skip_images)
    if problems:
        print(f'\n{len(problems)} problem(s); the Table 8 configs will not run until they are '
              f'fixed.', file=sys.stderr)
        return 1
    print('\nCOCO 2014 is ready for configs/faster_rcnn_*_coco.py')
    return 0


if __name__ == '__main__':
    sys.exit(main())
