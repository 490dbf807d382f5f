plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "com.mobile_distill.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "com.mobile_distill.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
    androidResources {
        // The model is memory-mapped from the APK: it must be stored uncompressed.
        noCompress += listOf("tflite", "f32")
    }
}

dependencies {
    implementation(project(":core"))
    implementation(libs.litert)
}
