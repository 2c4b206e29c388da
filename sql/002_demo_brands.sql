-- 002_demo_brands.sql — demo brands and products for seed 002, so that
-- `make run` and a fresh install have something to chat with at
-- /ws/chat/techpro. No schema change. An administrator removes them with
--   PRAGMA foreign_keys = ON;
--   DELETE FROM brands WHERE id IN ('techpro', 'homestyle', 'retired');
-- (products follow by ON DELETE CASCADE, which needs the pragma in the
-- sqlite3 shell, where foreign keys are off; Parley turns them on. Products
-- left without their brand make `parley db copy` refuse the database).
-- INSERT OR IGNORE keeps brands an administrator created before under the
-- same ids.

INSERT OR IGNORE INTO brands(id, name, welcome, system_prompt, active, created_at) VALUES
    ('techpro', 'TechPro Solutions', '',
     'You are the sales assistant of TechPro Solutions, a shop for laptops and phones. '
     || 'Help customers choose the right device and answer their questions briefly and '
     || 'accurately, in the customer''s language. Only recommend products from the list '
     || 'you are given; never invent products, prices or specifications.',
     1, 1705746600000),
    ('homestyle', 'HomeStyle Living', 'Hi! Looking for something for your home? Ask away.',
     '', 1, 1705746600000),
    ('retired', 'Retired Brand', '', '', 0, 1705746600000);

INSERT OR IGNORE INTO products(id, brand_id, name, description, category, price, features,
                               specifications, availability) VALUES
    ('laptop-001', 'techpro', 'Lenovo ThinkPad X1 Carbon',
     'Light and durable business laptop with an excellent keyboard and long battery life.',
     'Laptop', 24999000.00,
     '["Intel Core i7", "16GB RAM", "14-inch 2.8K OLED", "Fingerprint reader"]',
     '{"processor": "Intel Core i7-1365U", "memory": "16GB LPDDR5", "storage": "1TB SSD", "weight": "1.12 kg"}',
     1),
    ('laptop-002', 'techpro', 'Dell XPS 13 Plus',
     'Ultra-portable business laptop with a borderless display and a modern design.',
     'Laptop', 19999000.00,
     '["Intel Core i7", "16GB RAM", "13.4-inch display"]',
     '{"processor": "Intel Core i7-1255U", "memory": "16GB LPDDR5x", "storage": "512GB SSD"}',
     1),
    ('laptop-003', 'techpro', 'ASUS ROG Zephyrus G14',
     'Compact gaming laptop with a powerful graphics card and a fast 165Hz screen.',
     'Laptop', 27499000.00,
     '["AMD Ryzen 9", "NVIDIA RTX 4060", "32GB RAM", "165Hz display"]',
     '{"processor": "AMD Ryzen 9 7940HS", "graphics": "NVIDIA GeForce RTX 4060", "memory": "32GB DDR5", "storage": "1TB SSD"}',
     1),
    ('laptop-004', 'techpro', 'Acer Aspire 5',
     'Affordable everyday laptop for students, browsing and office work.',
     'Laptop', 7499000.00,
     '["Intel Core i5", "8GB RAM", "15.6-inch Full HD"]',
     '{"processor": "Intel Core i5-1235U", "memory": "8GB DDR4", "storage": "512GB SSD"}',
     1),
    ('phone-001', 'techpro', 'Samsung Galaxy S24',
     'Flagship Android phone with a bright screen and a versatile triple camera.',
     'Phone', 13999000.00,
     '["6.2-inch AMOLED", "50MP camera", "5G", "Wireless charging"]',
     '{"chipset": "Exynos 2400", "memory": "8GB", "storage": "256GB", "battery": "4000 mAh"}',
     1),
    ('phone-002', 'techpro', 'iPhone 15',
     'Apple phone with a 48MP camera, USB-C and all-day battery life.',
     'Phone', 15499000.00,
     '["6.1-inch Super Retina XDR", "48MP camera", "USB-C", "Dynamic Island"]',
     '{"chipset": "A16 Bionic", "storage": "128GB", "battery": "3349 mAh"}',
     1),
    ('phone-003', 'techpro', 'Google Pixel 7a',
     'Budget phone with a great camera and clean Android software.',
     'Phone', 6999000.00,
     '["6.1-inch OLED", "64MP camera", "5G"]',
     '{"chipset": "Google Tensor G2", "memory": "8GB", "storage": "128GB"}',
     0),
    ('home-001', 'homestyle', 'Oslo Three-Seat Sofa',
     'Comfortable linen sofa with solid oak legs, for living rooms of any size.',
     'Furniture', 8999000.00,
     '["Linen cover", "Oak legs", "Removable cushions"]',
     '{"width": "210 cm", "depth": "90 cm", "color": "Sand"}',
     1),
    ('home-002', 'homestyle', 'Nordic Floor Lamp',
     'Minimalist floor lamp with warm dimmable light for reading corners.',
     'Lighting', 1299000.00,
     '["Dimmable", "Warm white LED", "Steel base"]',
     '{"height": "150 cm", "power": "12 W"}',
     1);
