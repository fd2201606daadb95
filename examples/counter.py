"""The quick start: open a persistent workspace and use it.

Run it twice: the counter, the function and the list live in the backend's
store between runs (and across reboots).  The store is the default one,
$XDG_DATA_HOME/pyshelf (~/.local/share/pyshelf).
"""
import pyshelf

with pyshelf.open("quickstart") as ws:
    ws.remote_exec("""
try:
    runs += 1
except NameError:
    runs = 1
    history = []
    def describe(n):
        return "this workspace has been opened %d time%s" % (n, "" if n == 1 else "s")
history.append(runs)
""")
    print(ws.remote_exec("DirectValue(describe(runs))").value)
    print("history, kept in the backend:", ws["history"])
