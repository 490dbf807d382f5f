"""Write the ``R`` class aapt would generate (layout, id and string constants) as Kotlin, so the
app's sources compile against android.jar without the Android build tools."""

import re
import sys
from pathlib import Path


def main(res: Path, package: str, out: Path) -> None:
    layouts = sorted(p.stem for p in (res / "layout").glob("*.xml"))
    ids, strings = set(), set()
    for xml in res.rglob("*.xml"):
        text = xml.read_text()
        ids.update(re.findall(r'@\+id/(\w+)', text))
        strings.update(re.findall(r'<string name="(\w+)"', text))
    n = iter(range(0x7F010000, 0x7F020000))
    block = lambda name, names: f"    object {name} {{\n" + "".join(  # noqa: E731
        f"        const val {x} = {next(n)}\n" for x in sorted(names)) + "    }\n"
    out.write_text(f"package {package}\n\nobject R {{\n" + block("layout", layouts) + block("id", ids)
                   + block("string", strings) + "}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
