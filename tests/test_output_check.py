"The output check CI runs on every notebook (tools/run_in_kernel.py): committed outputs must be the committed code's run."
import sys
from pathlib import Path
import nbformat
sys.path.insert(0, str(Path(__file__).parent.parent/'tools'))
import run_in_kernel as rk

def cell(src, *outputs): return nbformat.v4.new_code_cell(src, outputs=list(outputs))
def out(text): return nbformat.v4.new_output('stream', name='stdout', text=text)
def result(plain, html=None):
    return nbformat.v4.new_output('execute_result', data={'text/plain': plain, **({'text/html': html} if html else {})})

def test_numbers_may_differ_but_words_may_not():
    old = [cell('print(acc)', out('accuracy 0.912, loss 0.31\n')), cell('x', result('tensor([1.5, 2.0])'))]
    same = [cell('print(acc)', out('accuracy 0.897,  loss 0.33\n')), cell('x', result('tensor([-1.0, 3e-05])'))]
    assert rk.output_mismatches(old, same) == []
    stale = [cell('print(acc)', out('accuracy nan, loss 0.31\n')), cell('x', result('tensor([1.5, 2.0])'))]
    bad = rk.output_mismatches(old, stale)
    assert len(bad) == 1 and 'code cell 0' in bad[0] and 'nan' in bad[0]

def test_a_message_that_changed_is_caught():
    "The case that started it: a stale error message kept in 17_checkpoint after the code's wording changed."
    old = [cell('try: learn.load(p)\nexcept CheckpointError as e: print(e)', out("holds the state of a AdamW optimizer; this learner's is SGD\n"))]
    new = [cell('try: learn.load(p)\nexcept CheckpointError as e: print(e)', out("holds an optimizer state of class AdamW; this learner's optimizer is SGD\n"))]
    assert len(rk.output_mismatches(old, new)) == 1

def test_missing_or_extra_output_is_caught_and_varying_cells_are_skipped():
    old = [cell('fit()', out('epoch 0 train\n'))]
    assert rk.output_mismatches(old, [cell('fit()')]) and rk.output_mismatches([cell('fit()')], old)
    varies = [cell('# output varies: a random sample\nprint(name)', out('Sneaker\n'))]
    assert rk.output_mismatches(varies, [cell(varies[0].source, out('Bag\n'))]) == []

def test_tables_are_compared_by_their_html_and_display_outputs_are_not_compared():
    old = [cell('df', result('   a  b\n0  1  2', '<table><tr><td>1</td><td>2</td></tr></table>'))]
    narrow = [cell('df', result('   a \\\n0  1\n\n   b\n0  2', '<table><tr><td>5</td><td>6</td></tr></table>'))]
    assert rk.output_mismatches(old, narrow) == []
    html = nbformat.v4.new_output('display_data', data={'text/html': '<progress value="3"></progress>'})
    assert rk.output_mismatches([cell('fit()', html)], [cell('fit()')]) == []

def test_machine_paths_in_outputs_are_caught():
    old = [cell('print(folder)', out('saved to /tmp/tmpab12cd/last.pt\n'))]
    bad = rk.output_mismatches(old, old)
    assert len(bad) == 1 and '/tmp/tmpab12cd/last.pt' in bad[0]
    fine = [cell('print(folder)', out('saved to runs/demo/last.pt (a/tmp/b is not a path)\n'))]
    assert rk.output_mismatches(fine, fine) == []

def test_written_streams_are_joined():
    joined = rk._coalesced([out('a\n'), out('b\n'), result('1'), out('c\n')])
    assert [o.output_type for o in joined] == ['stream', 'execute_result', 'stream'] and joined[0].text == 'a\nb\n'

def test_terminal_colours_are_not_compared():
    "A debugger's listing is coloured by whatever highlighter is installed; its words are what matter."
    old = [cell('pdb', out('> core.py(3)\x1b[0;34midentity\x1b[0m()\n\x1b[1;32mdef\x1b[0m identity(*args):\n'))]
    new = [cell('pdb', out('> core.py(3)\x1b[38;5;28midentity()\n\x1b[38;5;28;01mdef\x1b[39;00m identity(*args):\n'))]
    assert rk.output_mismatches(old, new) == []
    assert rk.output_mismatches(old, [cell('pdb', out('> core.py(3)other()\n'))])
