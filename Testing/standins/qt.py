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

    def layout(self):
        return getattr(self, "_layout", None)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))


class QDoubleSpinBox(QWidget):
    """Qt's defaults (range 0 to 99.99, 2 decimals); the range and the value are rounded to the decimals, the value
    kept in the range, and ``valueChanged(double)`` emitted when it changes. Properties as PythonQt reads them."""

    def __init__(self):
        super().__init__("QDoubleSpinBox")
        self.decimals, self.minimum, self.maximum, self._value = 2, 0.0, 99.99, 0.0
        self.singleStep, self.specialValueText = 1.0, ""

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value):
        self.setValue(value)

    def setValue(self, value):
        value = min(max(round(float(value), self.decimals), self.minimum), self.maximum)
        if value != self._value:
            self._value = value
            self.emit("valueChanged(double)", value)

    def setDecimals(self, decimals):
        self.decimals = decimals
        self.setRange(self.minimum, self.maximum)

    def setRange(self, minimum, maximum):
        self.minimum = round(float(minimum), self.decimals)
        self.maximum = max(round(float(maximum), self.decimals), self.minimum)
        self.setValue(self._value)

    def setSingleStep(self, step):
        self.singleStep = step

    def setSpecialValueText(self, text):
        self.specialValueText = text

    def setToolTip(self, text):
        self.toolTip = text


class QComboBox(QWidget):
    """Items added to an empty combo box make the first current; ``currentIndexChanged(int)`` is emitted when the
    current index changes (an index out of range makes it -1)."""

    def __init__(self):
        super().__init__("QComboBox")
        self._items, self.currentIndex = [], -1

    @property
    def currentText(self):
        return self._items[self.currentIndex] if self.currentIndex >= 0 else ""

    @property
    def count(self):
        return len(self._items)

    def itemText(self, index):
        return self._items[index]

    def addItems(self, texts):
        self._items.extend(texts)
        if self.currentIndex < 0 and self._items:
            self.setCurrentIndex(0)

    def setCurrentIndex(self, index):
        index = index if 0 <= index < len(self._items) else -1
        if index != self.currentIndex:
            self.currentIndex = index
            self.emit("currentIndexChanged(int)", index)

    def setToolTip(self, text):
        self.toolTip = text


class QLayout:
    """A layout given its parent widget at construction; the widgets (and form rows) it holds."""

    def __init__(self, parent=None):
        self.parent, self.widgets, self.rows = parent, [], []
        if parent is not None:
            parent._layout = self

    def addWidget(self, widget):
        self.widgets.append(widget)

    def removeWidget(self, widget):
        self.widgets.remove(widget)

    def addRow(self, label, field):
        self.rows.append((label, field))


class QVBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


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
