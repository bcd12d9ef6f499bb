"""Tab completion of `%pmp` and `%%pmp` lines: the commands, a command's
options, and the values of those that take one of a known set (`--backend`,
`%pmp cancel`'s Futures, `%pmp cache clear`). The words come from the magics'
own parser (`magics.parser`), so completion offers what %pmp accepts.

Cheap to import: pmp-kernel registers it at start-up, before the magics
themselves load; the parser is built at the first Tab on a %pmp line."""

import weakref
from concurrent.futures import Future

from IPython.core.completer import SimpleCompletion, context_matcher

_registered = weakref.WeakSet()  # shells that complete %pmp already


def register(shell):
    """Complete `%pmp` and `%%pmp` lines in `shell`. Once per shell, however
    often called: pmp-kernel calls it at start-up, `%load_ext pmp` again."""
    if shell in _registered:
        return
    _registered.add(shell)

    @context_matcher(identifier="pmp")
    def pmp_matcher(context):
        typing, words = _complete(shell, context.text_until_cursor)
        matches = [word for word in words if word.startswith(typing)]
        return {
            "completions": [SimpleCompletion(word) for word in matches],
            "matched_fragment": typing,
            "ordered": True,  # the parser's order: submit first
            # Only %pmp's words fit here: not Python names, not other magics.
            "suppress": bool(matches),
        }

    shell.Completer.custom_matchers.append(pmp_matcher)


def _complete(shell, line):
    """`(typing, words)`: the word the cursor is in (empty after a space) and
    the words that may take its place; no words where IPython's own
    completion fits better (not a %pmp line, a path, `%pmp submit`'s call)."""
    words = line.split()
    typing = "" if line[-1:].isspace() else words.pop() if words else ""
    if not words or words[0] not in ("%pmp", "%%pmp"):
        return typing, []
    from pmp.notebook.magics import parser

    return typing, _candidates(shell, parser(), words[1:], typing)


def _candidates(shell, top, given, typing):
    """The words that may follow `given` (the words after %pmp). argparse has
    no public list of a parser's arguments: `_actions` is what completers of
    argparse programs read."""
    commands = next(a for a in top._actions if a.dest == "command").choices
    if not given:
        return _options(top, given) if typing.startswith("-") else list(commands)
    command = commands.get(given[0])
    if command is None:
        return []
    if typing.startswith("-"):
        return _options(command, given)
    previous = given[-1]
    if previous.startswith("-"):
        action = next((a for a in command._actions if previous in a.option_strings), None)
        if action is None:
            return []  # an option %pmp does not know: nothing to offer
        if action.nargs != 0:  # not a flag: the cursor is at its value
            return _values(shell, action)
    positionals = [a for a in command._actions if not a.option_strings]
    taken = len(_positional_words(command, given[1:]))
    return _values(shell, positionals[taken]) if taken < len(positionals) else []


def _options(parser, given):
    """The long options of `parser` not on the line yet."""
    return [
        option
        for action in parser._actions
        if not set(action.option_strings) & set(given)
        for option in action.option_strings
        if option.startswith("--")
    ]


def _positional_words(command, words):
    """The words of `words` that are positional arguments: neither options
    nor the value of one."""
    takes_value = {
        option
        for action in command._actions
        if action.nargs != 0
        for option in action.option_strings
    }
    positional, value_next = [], False
    for word in words:
        if word.startswith("-"):
            value_next = word in takes_value
        elif value_next:
            value_next = False
        else:
            positional.append(word)
    return positional


def _values(shell, action):
    """What may be typed as the value of `action`; none where that is open
    (a path, a count, a name, a call)."""
    if action.choices is not None:
        return list(action.choices)
    if action.dest == "backend":
        from pmp.client.backends import BACKENDS

        # The Executor checks the backend: argparse choices would check it twice.
        return list(BACKENDS)
    if action.dest == "target":  # %pmp cancel
        futures = [
            name
            for name, value in shell.user_ns.items()
            if isinstance(value, Future) and not name.startswith("_")
        ]
        return [*sorted(futures), "all"]
    return []
