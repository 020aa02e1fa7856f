import Testing
@Test func entrypointPlaceholder() { #expect(Bool(true)) }
