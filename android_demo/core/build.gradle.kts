// Pure Kotlin/JVM: no android.* imports, so it builds and tests on any JVM.
plugins {
    alias(libs.plugins.kotlin.jvm)
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // Android has org.json built in; on the JVM it is a normal dependency.
    compileOnly(libs.json)
    testImplementation(libs.json)
    testImplementation(libs.junit)
}

tasks.test {
    // Cross-language golden fixtures written by the Python toolkit (see android_demo/README.md).
    System.getenv("MDISTILL_GOLDEN_DIR")?.let { systemProperty("MDISTILL_GOLDEN_DIR", it) }
}
