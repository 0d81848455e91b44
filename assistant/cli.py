"""Command-line shell over the pipeline: ingest, search, info, ask, chat, serve, eval."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assistant.settings import Settings

if TYPE_CHECKING:
    from assistant.index import Index

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("data_dir", "backend"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _open_index(settings: Settings) -> Index:
    """The index with its embedder: the one e5 model a command loads."""
    from assistant.embedding import build_embedder
    from assistant.index import Index

    with console.status("Chargement du modèle d'embeddings…"):
        return Index(settings, build_embedder(settings))


def _sync(index: Index, source: Path, as_json: bool) -> int:
    """Index ``source`` (plus uploads) with a progress bar and a summary; 1 when files failed."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage.capitalize(), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        report = index.sync([source, index.settings.uploads_dir], progress=progress)
    if as_json:
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


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = _settings(args)
    source = Path(args.path) if args.path else settings.corpus_dir
    if not source.exists():
        console.print(f"[red]Dossier ou fichier introuvable : {source}[/red]")
        return 2
    return _sync(_open_index(settings), source, args.json)


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
        "embedder": settings.embedder,
        **assistant.index.stats(),
        "documents_detail": [d.__dict__ for d in assistant.index.documents()],
        "problems": assistant.index.verify(),
    }
    if settings.backend == "local":
        from assistant.llm import llama_build

        built, missing = llama_build()
        info["llama_cpp"] = built  # AVX512 reads prompts ~1.8x faster than the portable AVX2 build
        if missing:
            info["problems"].append(
                f"llama-cpp-python compilé pour {missing}, absent de ce processeur : relancez scripts/setup.sh"
            )
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


def _print_sources(answer) -> None:
    listed = answer.citations or ([] if answer.refused else answer.sources)
    if not listed:
        return
    out.print("\n[bold]Sources[/bold]")
    for c in listed:
        page = f", p. {c.chunk.page}" if c.chunk.page is not None else ""
        section = f" — {c.chunk.section}" if c.chunk.section else ""
        out.print(f"  [{c.n}] {c.chunk.title}{section}{page}", markup=False, highlight=False)
        if c.snippet:
            out.print(f"      « {c.snippet[:300]} »", markup=False, highlight=False, style="dim")


def _answer(assistant, question: str, conversation, args: argparse.Namespace) -> int:
    """Stream one answer (raw tokens, dim), then the checked, cited text and its sources."""
    from assistant.schema import Answer, Reading

    options = {"doc_id": args.doc, "backend": args.backend, "k": args.k}
    if args.json:
        answer = assistant.ask(question, conversation, **options)
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=1))
        return 0
    answer = None
    streamed = False
    generates = (args.backend or assistant.settings.backend) != "extractive"
    for event in assistant.stream(question, conversation, **options):
        if isinstance(event, Answer):
            answer = event
        elif isinstance(event, Reading):
            if generates:  # the model reads for seconds: say what
                console.print(f"[dim]Le modèle lit {len(event.sources)} passage(s) :[/dim]")
                for c in event.sources:
                    out.print(f"  [{c.n}] {c.chunk.location}", style="dim", markup=False, highlight=False)
        elif answer is None and generates:
            if not streamed:
                console.print("[dim]Brouillon du modèle (vérifié ensuite) :[/dim]")
                streamed = True
            console.print(event, end="", style="dim", markup=False, highlight=False)
    if streamed:
        console.print()
    assert answer is not None
    if answer.interpreted_question:
        console.print(f"[dim]Question comprise : {escape(answer.interpreted_question)}[/dim]")
    style = "yellow" if answer.refused else "bold"
    if answer.quoted_fallback:
        console.print("[dim]Réponse rédigée non vérifiable : voici les extraits des sources.[/dim]")
    out.print(answer.text, style=style, markup=False, highlight=False)
    _print_sources(answer)
    t = answer.timings
    first = f"{t.first_token:.1f} s" if t.first_token is not None else "—"
    console.print(
        f"[dim]recherche {t.retrieval:.2f} s · premier mot {first} · total {t.total:.1f} s · {answer.backend}[/dim]"
    )
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from assistant.chat import Assistant

    settings = _settings(args)
    with console.status("Chargement de l'assistant…"):
        assistant = Assistant.from_settings(settings, load_llm=(args.backend or settings.backend) != "extractive")
    return _answer(assistant, args.question, None, args)


def cmd_chat(args: argparse.Namespace) -> int:
    from assistant.chat import Assistant, Conversation
    from assistant.errors import InvalidQuestionError

    settings = _settings(args)
    with console.status("Chargement de l'assistant…"):
        assistant = Assistant.from_settings(settings, load_llm=(args.backend or settings.backend) != "extractive")
    conversation = Conversation()
    console.print(
        "Posez vos questions sur la santé numérique. Commandes : /reset (nouvelle conversation), /sources, /quit."
    )
    while True:
        try:
            question = input("\n› ").strip()
        except EOFError:
            return 0
        if question in ("/quit", "/exit", "/q"):
            return 0
        if question == "/reset":
            conversation.reset()
            console.print("Nouvelle conversation.")
            continue
        if question == "/sources":
            if conversation.answers:
                last = conversation.answers[-1]
                for c in last.sources:
                    out.print(f"  [{c.n}] {c.chunk.location}", markup=False, highlight=False)
            continue
        if not question:
            continue
        try:
            _answer(assistant, question, conversation, args)
        except InvalidQuestionError as exc:
            console.print(f"[red]{exc}[/red]")


def cmd_serve(args: argparse.Namespace) -> int:
    from assistant.chat import Assistant
    from assistant.retrieve import HybridRetriever
    from ui.app import launch

    settings = _settings(args)
    index = _open_index(settings)
    if not index.exists():
        console.print("Premier lancement : indexation du corpus…")
        _sync(index, settings.corpus_dir, as_json=False)
    index.load()
    assistant = Assistant(settings, index, HybridRetriever.from_settings(index, settings))
    launch(assistant, settings, args.host or settings.host, args.port or settings.port)
    return 0


def cmd_eval(args: argparse.Namespace, rest: list[str]) -> int:
    from assistant.evaluation import main_eval

    return main_eval(rest)


def _add_answer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["local", "extractive", "openai", "ollama"], default=None)
    p.add_argument("-k", type=int, default=None, help="nombre de passages retrouvés")
    p.add_argument("--doc", help="restreindre à un document (doc_id)")
    p.add_argument("--json", action="store_true")


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

    p = sub.add_parser("ask", help="poser une question (réponse sourcée)")
    p.add_argument("question")
    _add_answer_options(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="conversation interactive (/reset, /sources)")
    _add_answer_options(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="application web (Gradio)")
    p.add_argument("--host", default=None, help="adresse d'écoute (127.0.0.1 par défaut)")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--backend", choices=["local", "extractive", "openai", "ollama"], default=None)
    p.set_defaults(func=cmd_serve)

    sub.add_parser("eval", help="évaluation par lots : assistant eval QA.jsonl … (voir eval/README.md)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    from assistant.errors import UserFacingError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "eval" in argv:  # the eval harness has its own argument parser
        position = argv.index("eval")
        args = parser.parse_args([*argv[:position], "info"])
        if args.data_dir is not None:
            import os

            os.environ["ASSISTANT_DATA_DIR"] = str(args.data_dir)
        return cmd_eval(args, argv[position + 1 :])
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        console.print("Interrompu.")
        return 130
    except UserFacingError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
