"""Command-line shell over the pipeline: ingest, search, info, ask, chat, serve, eval."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assistant.settings import Settings

console = Console(stderr=True)
out = Console()


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("data_dir", "backend", "top_k"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def cmd_ingest(args: argparse.Namespace) -> int:
    from assistant.embedding import build_embedder
    from assistant.index import Index

    settings = _settings(args)
    source = Path(args.path) if args.path else settings.corpus_dir
    if not source.exists():
        console.print(f"[red]Dossier ou fichier introuvable : {source}[/red]")
        return 2
    with console.status("Chargement du modèle d'embeddings…"):
        index = Index(settings, build_embedder(settings))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage.capitalize(), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        report = index.sync([source, settings.uploads_dir], progress=progress)
    if args.json:
        out.print_json(data=report.to_dict())
    else:
        console.print(
            f"[bold]{report.files}[/bold] fichiers, [bold]{report.chunks}[/bold] passages — "
            f"{report.added} ajoutés, {report.removed} supprimés, {report.embedded} embeddings calculés "
            f"(nouveaux : {len(report.new_files)}, modifiés : {len(report.updated_files)}, "
            f"inchangés : {len(report.unchanged_files)}, retirés : {len(report.removed_files)}) en {report.seconds:.1f} s"
        )
        for failure in report.failed:
            console.print(f"[red]Échec[/red] {failure.path} : {failure.reason}")
    return 1 if report.failed else 0


def cmd_search(args: argparse.Namespace) -> int:
    from assistant.chat import Assistant

    assistant = Assistant.from_settings(_settings(args), load_llm=False)
    hits = assistant.retriever.retrieve(args.question, k=args.k, doc_id=args.doc, mode=args.mode)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=1))
        return 0
    if not hits:
        out.print("Aucun passage trouvé.")
    for rank, hit in enumerate(hits, 1):
        c = hit.chunk
        page = f" — p. {c.page}" if c.page is not None else ""
        out.print(f"[bold cyan]{rank}.[/bold cyan] [bold]{c.title}[/bold]{page}  (score {hit.score:.4f}, id {c.id})")
        if c.section:
            out.print(f"   [dim]{c.section}[/dim]")
        out.print("   " + c.text.strip().replace("\n", "\n   "), markup=False, highlight=False)
        out.print()
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from assistant.chat import Assistant

    settings = _settings(args)
    assistant = Assistant.from_settings(settings, load_llm=False)
    info = {
        "data_dir": str(settings.data_dir.resolve()),
        "corpus_dir": str(settings.corpus_dir),
        "models_dir": str(settings.models_dir),
        "backend": settings.backend,
        **assistant.index.stats(),
        "documents_detail": [d.__dict__ for d in assistant.index.documents()],
        "problems": assistant.index.verify(),
    }
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=1))
        return 0
    for key, value in info.items():
        if key == "documents_detail":
            for doc in value:
                meta = doc["metadata"]
                out.print(
                    f"  • {doc['doc_id']} — {doc['title']} ({meta.get('type', doc['kind'])}, {meta.get('date', '?')}) : {doc['chunks']} passages"
                )
        elif key == "problems":
            for problem in value:
                out.print(f"[red]Problème :[/red] {problem}")
        else:
            out.print(f"[bold]{key}[/bold] : {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant",
        description="Assistant Santé numérique — questions sourcées sur la stratégie française de santé numérique.",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="dossier des index et caches (ASSISTANT_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="indexer un dossier (par défaut corpus/)")
    p.add_argument("path", nargs="?", help="fichier ou dossier .md/.txt/.pdf")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="chercher des passages (hybride dense + BM25)")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--doc", help="restreindre à un document (doc_id)")
    p.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("info", help="état de l'index, modèles, dossiers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from assistant.errors import UserFacingError, friendly

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        console.print("Interrompu.")
        return 130
    except UserFacingError as exc:
        console.print(f"[red]{friendly(exc)}[/red]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
