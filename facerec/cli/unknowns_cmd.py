"""``facerec unknowns list|show|name|merge|dismiss|prune`` and ``facerec feedback not``.

Candidates are groups of unknown sightings the daemon kept (``unknowns.enabled``); their
ids come from ``list`` and stay the same until the candidate is named, dismissed, expires
or merges with another. Every change is written to the audit log (``facerec unknowns audit``).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from facerec.cli.common import print_json
from facerec.config import Config
from facerec.errors import FacerecError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from facerec.cli.common import plain_parser

    plain = plain_parser()  # for the actions that run no model

    un = sub.add_parser("unknowns", help="candidate people grouped from unknown faces: list, name, merge, dismiss",
                        description="Unknown faces the daemon kept (unknowns.enabled), grouped into candidate "
                                    "people by unknowns.min_faces / unknowns.max_distance.")
    usub = un.add_subparsers(dest="unknowns_command", metavar="WHAT")
    un.set_defaults(func=lambda args, cfg: (un.print_help(), 2)[1])

    p = usub.add_parser("list", parents=[plain], help="candidates, the most sighted first")
    p.add_argument("--all", action="store_true", help="also list ungrouped sightings (seen too rarely so far)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = usub.add_parser("show", parents=[plain], help="one candidate's sightings; --crops DIR writes its crops")
    p.add_argument("id", type=int, help="candidate id from `list`")
    p.add_argument("--crops", metavar="DIR", help="write the kept crops here as JPEG")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = usub.add_parser("name", parents=[common], help="enroll a candidate as a new person (all its crops)")
    p.add_argument("id", type=int, help="candidate id from `list`")
    p.add_argument("person", help="the new person's name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_name, new=True)

    p = usub.add_parser("merge", parents=[common], help="add a candidate's crops to an enrolled person")
    p.add_argument("id", type=int, help="candidate id from `list`")
    p.add_argument("person", help="an enrolled person")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_name, new=False)

    p = usub.add_parser("dismiss", parents=[plain], help="delete a candidate's sightings and crops")
    p.add_argument("id", type=int, help="candidate id from `list`")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_dismiss)

    p = usub.add_parser("prune", parents=[plain], help="apply the unknowns retention limits now")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_prune)

    fb = sub.add_parser("feedback", help="correct a recognition: feedback not NAME PHOTO",
                        description="Negative feedback: the face in PHOTO is not NAME.")
    fsub = fb.add_subparsers(dest="feedback_command", metavar="WHAT")
    fb.set_defaults(func=lambda args, cfg: (fb.print_help(), 2)[1])
    p = fsub.add_parser("not", parents=[common], help="keep a face as a negative sample of NAME",
                        description="Keep the face of PHOTO (the largest, or --face I) as a negative sample of "
                                    "NAME: a later face closer to one of NAME's negatives than to NAME is not named NAME.")
    p.add_argument("person", metavar="NAME", help="the enrolled person the face was wrongly named")
    p.add_argument("photo", metavar="PHOTO", help="the photo")
    p.add_argument("--face", type=int, metavar="I", help="face index as `facerec identify` lists them (default: largest)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_not)

    p = usub.add_parser("audit", parents=[plain], help="the audit log of gallery changes, newest first")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="entries to show (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_audit)


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def open_strangers(cfg: Config):
    """The gallery backend and the candidates over its sightings (embedder: the newest sighting's)."""
    from facerec.gallery.backend import open_backend
    from facerec.unknowns import ClusterParams, Strangers

    store = open_backend(cfg.gallery)
    params = ClusterParams(cfg.unknowns.min_faces, cfg.unknowns.max_distance)
    return store, Strangers(store, params, store.latest_embedder() or "")


def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    store, strangers = open_strangers(cfg)
    with store:
        cands = strangers.candidates(include_noise=args.all)
        if args.json:
            print_json([c.to_json() for c in cands])
            return 0
        st = store.unknowns_stats()
        print(f"{len(cands)} candidate(s) from {st['sightings']} sighting(s) ({st['bytes'] / 1e6:.1f} MB of crops)")
        for c in cands:
            print(f"  {c.id:>6}  {len(c.sightings):>3} sighting(s)  {', '.join(c.cameras)}  "
                  f"{_when(c.first_seen)} .. {_when(c.last_seen)}")
    return 0


def cmd_show(args: argparse.Namespace, cfg: Config) -> int:
    store, strangers = open_strangers(cfg)
    with store:
        c = strangers.candidate(args.id)
        written = []
        if args.crops:
            out = Path(args.crops)
            try:
                out.mkdir(parents=True, exist_ok=True)
                for sid, crop_id, _, jpeg in store.unknown_crops([s.id for s in c.sightings]):
                    path = out / f"candidate{c.id}_sighting{sid}_crop{crop_id}.jpg"
                    path.write_bytes(jpeg)
                    written.append(str(path))
            except OSError as e:
                raise FacerecError(f"cannot write crops to {out}: {e.strerror or e}") from None
        if args.json:
            d = c.to_json(details=True)
            d["written"] = written
            print_json(d)
            return 0
        print(f"candidate {c.id}: {len(c.sightings)} sighting(s) on {', '.join(c.cameras)}, "
              f"first seen {_when(c.first_seen)}, last seen {_when(c.last_seen)}")
        for s in c.sightings:
            print(f"  sighting {s.id}: {s.camera} track {s.track_id}, {_when(s.first_seen)} .. {_when(s.last_seen)}, "
                  f"quality {s.quality:.2f}, {len(s.crop_ids)} crop(s)")
        if written:
            print(f"{len(written)} crop(s) written to {args.crops}")
    return 0


def cmd_name(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.gallery.service import GalleryService

    store, strangers = open_strangers(cfg)
    with store, GalleryService(cfg) as service:
        r = strangers.enroll(args.id, args.person, service, new=args.new, interface="cli")
    if args.json:
        print_json(r)
    else:
        verb = "enrolled as" if args.new else "merged into"
        print(f"candidate {r['candidate']} {verb} {r['person']!r}: {r['summary']} (from {r['sightings']} sighting(s))")
    return 0


def cmd_dismiss(args: argparse.Namespace, cfg: Config) -> int:
    store, strangers = open_strangers(cfg)
    with store:
        r = strangers.dismiss(args.id, interface="cli")
    if args.json:
        print_json(r)
    else:
        print(f"candidate {r['candidate']} dismissed: {r['deleted']} sighting(s) and their crops deleted")
    return 0


def cmd_prune(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.gallery.backend import open_backend
    from facerec.gallery.records import AuditNote

    u = cfg.unknowns
    with open_backend(cfg.gallery) as store:
        gone = store.prune_sightings(u.retention_s, u.max_sightings, int(u.max_mb * 1e6),
                                     audit=AuditNote("cli", "unknown.prune", "retention"))
    if args.json:
        print_json({"deleted": len(gone)})
    else:
        print(f"{len(gone)} sighting(s) deleted by retention")
    return 0


def cmd_audit(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.gallery.backend import open_backend

    with open_backend(cfg.gallery) as store:
        rows = store.audit_log(args.limit)
    if args.json:
        print_json([r.to_json() for r in rows])
        return 0
    for r in rows:
        print(f"{_when(r.at)}  {r.interface:<6} {r.action:<18} {r.subject}  {r.detail}")
    return 0


def cmd_not(args: argparse.Namespace, cfg: Config) -> int:
    from facerec.errors import ImageReadError
    from facerec.gallery.service import GalleryService
    from facerec.imageio import read_image
    from facerec.unknowns import mark_not

    try:
        image = read_image(args.photo)
    except ImageReadError as e:
        raise FacerecError(str(e)) from None
    with GalleryService(cfg) as service:
        r = mark_not(service, args.person, image, face=args.face, interface="cli", source=str(args.photo))
    if args.json:
        print_json(r)
    else:
        print(f"kept as negative sample {r['negative']} of {r['person']!r} (similarity to them {r['similarity']:.3f})")
    return 0
