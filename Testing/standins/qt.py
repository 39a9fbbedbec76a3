"""Stand-in for PythonQt's ``qt`` (the part DPETResponse.py uses), for tests outside Slicer.

Signals are connected and emitted by their C++ signature, as PythonQt connects them. QProcess runs a real process:
kill() stops that process only, as Qt's does, and a program that cannot be started emits
``errorOccurred(QProcess::ProcessError)`` with FailedToStart and no ``finished(int,QProcess::ExitStatus)``.
"""

import subprocess


class QObject:
    def __init__(self):
        self._slots = {}

    def connect(self, signature, slot):
        self._slots.setdefault(signature, []).append(slot)

    def disconnect(self, signature, slot):
        self._slots.get(signature, []).remove(slot)

    def emit(self, signature, *args):
        for slot in list(self._slots.get(signature, [])):
            slot(*args)


class QWidget(QObject):
    """A widget of a .ui file: its class name, its properties; Qt methods it does not model are recorded."""

    def __init__(self, className="QWidget", name="", properties=None):
        super().__init__()
        self.className, self.objectName, self._properties = className, name, dict(properties or {})
        self.enabled, self.toolTip, self.calls = True, "", []

    def property(self, name):
        return self._properties.get(name)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))


class QByteArray:
    def __init__(self, data=b""):
        self._data = data

    def data(self):
        return self._data


class QProcessEnvironment:
    def __init__(self):
        self.values = {}

    def insert(self, key, value):
        self.values[key] = value


class QProcess(QObject):
    NormalExit, CrashExit = 0, 1
    FailedToStart, Crashed, Timedout, ReadError, WriteError, UnknownError = range(6)
    SeparateChannels, MergedChannels = 0, 1

    def __init__(self):
        super().__init__()
        self._popen, self._environment, self._errorString, self._finished = None, None, "", False

    def setProcessEnvironment(self, environment):
        self._environment = dict(environment.values)

    def setProcessChannelMode(self, mode):
        pass

    def start(self, program, arguments):
        try:
            self._popen = subprocess.Popen([program, *arguments], env=self._environment,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as error:
            self._errorString = f"execve: {error.strerror}"
            self.emit("errorOccurred(QProcess::ProcessError)", self.FailedToStart)

    def processId(self):
        return self._popen.pid if self._popen is not None and self._popen.returncode is None else 0

    def errorString(self):
        return self._errorString

    def readAllStandardOutput(self):
        return QByteArray()

    def kill(self):
        if self._popen is not None and self._popen.returncode is None:
            self._popen.kill()

    def waitForFinished(self, msecs=30000):
        if self._popen is None:
            return False
        try:
            code = self._popen.wait(msecs / 1000)
        except subprocess.TimeoutExpired:
            return False
        if not self._finished:
            self._finished = True
            if code < 0:  # ended by a signal
                self.emit("errorOccurred(QProcess::ProcessError)", self.Crashed)
            status = self.CrashExit if code < 0 else self.NormalExit
            self.emit("finished(int,QProcess::ExitStatus)", max(code, 0), status)
        return True
