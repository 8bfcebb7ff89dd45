"""The lessons read in order: no notebook and no module uses what a later notebook teaches.

Each notebook `NN_name.ipynb` has a number. A module's home is the notebook that declares it (`#| default_exp`); a name
exported into `miniai.core` from a lesson is taught by that lesson. A notebook may import a module only if its home
comes no later than the notebook itself, and a name from `core` only if it was taught by then. A notebook exports
only into its own module, `core` (the shared home), or `all` (the one-import module). The package's own imports obey
the same order: module X imports module Y only if Y's home comes no later than X's.
"""
import ast, json, re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NBS = sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if re.match(r'\d\d_', p.name) and not p.name.startswith('00'))   # 00_index, the front page, shows the finished library
SHARED = {'core', 'all'}   # modules that receive cells from many notebooks

def code_cells(nb_path):
    "The source of each code cell of the notebook, with IPython's magics and shell lines blanked out."
    cells = json.loads(nb_path.read_text())['cells']
    srcs = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
    return [re.sub(r'^\s*[%!].*$', '', s, flags=re.M) for s in srcs]

def directives(src):
    "The nbdev directives of a cell, as `(name, argument)` pairs."
    return [(m[1], m[2].strip()) for m in re.finditer(r'^#\s*\|\s*(\w+)[ \t]*(.*)$', src, re.M)]

def miniai_imports(tree, package=None):
    "`(module, names)` for each import of a miniai module in `tree` (relative ones resolved against `package`)."
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level and package: mod = f'{package}.{mod}' if mod else package
            if mod == 'miniai': out += [(a.name, ['*']) for a in node.names]          # from miniai import learner
            elif mod.startswith('miniai.'): out.append((mod.split('.')[1], [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name.split('.')[1], ['*']) for a in node.names if a.name.startswith('miniai.')]
    return out

def defined_names(tree):
    "The names a cell defines at its top level."
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
    return names

def survey():
    "For every numbered notebook: its number, module, export targets, miniai imports; and where each core name is taught."
    home, taught, nbs = {}, defaultdict(dict), []
    for p in NBS:
        num, module, exports, imports = int(p.name[:2]), None, set(), []
        for src in code_cells(p):
            ds = directives(src)
            for name, arg in ds:
                if name == 'default_exp': module = arg
            # modules reached without an import statement: importlib, or reading the generated file
            imports += [(m, ['*']) for m in re.findall(r"import_module\(\s*['\"]miniai\.(\w+)|miniai/(\w+)\.py", src) for m in m if m]
            try: tree = ast.parse(src)
            except SyntaxError: continue
            imports += miniai_imports(tree)
            for name, arg in ds:
                if name in ('export', 'exports', 'exporti'):
                    exports.add(arg or None)
                    for n in defined_names(tree): taught[arg or module].setdefault(n, num)
        if module: home[module] = num
        nbs.append((p.name, num, module, exports, imports))
    for name, num, module, exports, _ in nbs:
        for target in exports - {None}: home.setdefault(target, num)
    return home, taught, nbs

HOME, TAUGHT, NOTEBOOKS = survey()

def too_late(module, names, num):
    "Why importing `names` of miniai `module` at notebook number `num` uses a later lesson, or None."
    if module not in HOME: return f'miniai.{module} is not declared by any notebook'
    if HOME[module] > num: return f'miniai.{module} is taught in notebook {HOME[module]:02d}'
    if module == 'core':
        later = {n: TAUGHT['core'][n] for n in TAUGHT['core'] if TAUGHT['core'][n] > num} if '*' in names else \
                {n: TAUGHT['core'].get(n, 0) for n in names if TAUGHT['core'].get(n, 0) > num}
        if later: return 'miniai.core names taught later: ' + ', '.join(f'{n} ({k:02d})' for n, k in later.items())

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[n[0] for n in NOTEBOOKS])
def test_notebook_uses_only_earlier_lessons(nb):
    name, num, module, exports, imports = nb
    problems = [f'{name} imports {mod}: {why}' for mod, names in imports if (why := too_late(mod, names, num))]
    wrong = {t for t in exports - {None} if t not in SHARED and t != module}
    problems += [f'{name} exports into miniai.{t} (home: notebook {HOME.get(t, 0):02d}); export into its own module' for t in wrong]
    assert not problems, '\n'.join(problems)

MODULES = sorted(p for p in (ROOT/'miniai').glob('*.py') if not p.name.startswith('_'))

@pytest.mark.parametrize('path', MODULES, ids=[p.stem for p in MODULES])
def test_module_imports_run_down_the_lessons(path):
    module = path.stem
    assert module in HOME, f'miniai/{path.name} has no notebook that declares it'
    if module == 'all': return   # the one-import module gathers everything, and is exported by the last notebook
    imports = miniai_imports(ast.parse(path.read_text()), package='miniai')
    problems = [f'miniai.{module} (notebook {HOME[module]:02d}) imports {mod}: {why}'
                for mod, names in imports if mod != module and (why := too_late(mod, names, HOME[module]))]
    assert not problems, '\n'.join(problems)

def test_survey_sees_the_lessons():
    "The survey itself must see what is there, or the checks above pass vacuously."
    assert HOME['core'] == 1 and HOME['learner'] == 9 and HOME['conv'] == 7
    assert TAUGHT['core']['to_device'] == 7 and 'set_seed' in TAUGHT['core']
    assert too_late('learner', ['Learner'], 8) and not too_late('learner', ['Learner'], 9)
    assert too_late('core', ['to_device'], 4) and not too_late('core', ['to_device'], 7)
