import Testing
@Test func kubernetesPlaceholder() { #expect(Bool(true)) }
