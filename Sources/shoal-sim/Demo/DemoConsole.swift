import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Shows the demo as it happens: a live table redrawn in place on a terminal, or plain lines (CI, tests, pipes).
final class DemoConsole: Sendable {
    /// Whether the table is redrawn with ANSI escapes.
    let live: Bool
    private let state = Mutex(State())

    private struct State {
        var drawnLines = 0
        var printedEvents = 0
        var lastLine = ""
        var lastLineTime = -100.0
        var recent: [String] = []
    }

    init(live: Bool) { self.live = live }

    /// Prints a line above the table (set-up messages, the summary).
    func say(_ text: String) {
        state.withLock { state in
            var out = clear(&state)
            out += text + "\n"
            write(out)
        }
    }

    /// Shows a frame and the events not shown yet.
    func show(_ frame: DemoFrame, events: [(time: Double, text: String)], total: Int) {
        state.withLock { state in
            let fresh = events.dropFirst(state.printedEvents).map { String(format: "%6.1fs  ", $0.time) + $0.text }
            state.printedEvents = events.count
            if live {
                state.recent = Array((state.recent + fresh).suffix(12))
                var out = clear(&state)
                let lines = table(frame, total: total) + ["", "Recent events and controller decisions:"] + state.recent.map { "  " + $0 }
                let width = Self.terminalWidth()
                for line in lines { out += String(line.prefix(width - 1)) + "\n" }
                state.drawnLines = lines.count
                write(out)
            } else {
                var out = fresh.map { $0 + "\n" }.joined()
                let line = frame.line
                let body = String(line.drop(while: { $0 != "j" }))
                if body != state.lastLine && frame.elapsed - state.lastLineTime >= 2 || frame.elapsed - state.lastLineTime >= 15 {
                    out += line + "\n"
                    state.lastLine = body
                    state.lastLineTime = frame.elapsed
                }
                if !out.isEmpty { write(out) }
            }
        }
    }

    /// Removes the drawn table (before the summary).
    func finish() {
        state.withLock { state in write(clear(&state)) }
    }

    private func clear(_ state: inout State) -> String {
        guard live, state.drawnLines > 0 else { return "" }
        defer { state.drawnLines = 0 }
        return "\u{1B}[\(state.drawnLines)A\u{1B}[J"
    }

    private func table(_ frame: DemoFrame, total: Int) -> [String] {
        let done = frame.jobsDone
        let width = 30
        let filled = total > 0 ? min(width, done * width / total) : 0
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        func cell(_ value: Int) -> String { String(value).leftPadded(to: 7) }
        return [
            String(format: "Shoal demo  %5.0fs  ", frame.elapsed) + frame.step,
            "progress  [\(bar)] \(done)/\(total) jobs done",
            "",
            "  jobs    queued running    done   |  agents    idle    busy offline  |  placeholder",
            "        " + cell(frame.jobsQueued) + " " + cell(frame.jobsRunning) + " " + cell(frame.jobsDone) + "   |          "
                + cell(frame.agentsIdle) + " " + cell(frame.agentsBusy) + " " + cell(frame.agentsOffline) + "  |  " + (frame.placeholder ? "registered" : "-"),
            "  pods   Pending Running Succeeded  Failed Terminating |  peak \(frame.peakPods)/\(frame.maxAgents) (maxAgents)",
            "        " + cell(frame.pods["Pending"] ?? 0) + " " + cell(frame.pods["Running"] ?? 0) + "   " + cell(frame.pods["Succeeded"] ?? 0) + " "
                + cell(frame.pods["Failed"] ?? 0) + "     " + cell(frame.pods["Terminating"] ?? 0) + " |",
            "  AgentPool status  " + frame.poolStatus,
        ]
    }

    private func write(_ text: String) {
        guard !text.isEmpty else { return }
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    /// The terminal's width (80 when unknown).
    static func terminalWidth() -> Int {
        var size = winsize()
        if ioctl(1, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 20 { return Int(size.ws_col) }
        return 80
    }
}

extension String {
    /// Right-aligns the string in `width` characters.
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
