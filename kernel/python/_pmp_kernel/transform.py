"""IPython's static input transformations, skipped for cells they leave
alone.

Before every cell IPython tokenizes it (more than once) looking for its own
syntax: prompts to strip, leading indentation or blank lines, `%` magics,
`!` shell escapes, `?` help, and the `,` `;` `/` autocall escapes at the
start of a line. A cell with none of the characters or line starts those
transformations look for comes out of them unchanged but for a final
newline, so `QuickTransformerManager` returns that directly. It does so only
while its transformation lists are IPython's defaults; an extension that
adds a transformation gets IPython's full path."""

import re

from IPython.core.inputtransformer2 import TransformerManager

# Anything a default transformation could act on. Generous on purpose: a
# false alarm costs only the usual path.
#   %  ! ?           magics, shell escapes, help (also `a = %x`, `a = !x`)
#   odd line breaks  str.splitlines() and the regexes would see other lines
#   ^[ \t]+$         textwrap.dedent (leading_indent) empties such lines
#   >>> ... In [     prompts (classic, doctest, IPython)
#   ^\s*[,;/]        autocall escapes at the start of a line
_SPECIAL = re.compile(
    r"[%!?\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]|^[ \t]+$|^\s*(?:>>>|\.\.\.|In \[)|^\s*[,;/]",
    re.MULTILINE,
)


def untouched(cell):
    """Whether the default static transformations leave `cell` as it is
    (apart from the trailing newline they add)."""
    # A leading blank line or indentation is removed (leading_empty_lines,
    # leading_indent).
    return bool(cell) and not cell[0].isspace() and _SPECIAL.search(cell) is None


class QuickTransformerManager(TransformerManager):
    def __init__(self):
        super().__init__()
        self._defaults = (
            list(self.cleanup_transforms),
            list(self.line_transforms),
            list(self.token_transformers),
        )

    def transform_cell(self, cell):
        if untouched(cell) and self._defaults == (
            self.cleanup_transforms,
            self.line_transforms,
            self.token_transformers,
        ):
            return cell if cell.endswith("\n") else cell + "\n"
        return super().transform_cell(cell)
