from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0002_features_links_uploads")]

    operations = [
        migrations.AddField(
            model_name="chunk",
            name="holder",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
    ]
